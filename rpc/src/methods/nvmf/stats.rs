//! What the poll groups hold: nvmf_get_stats, nvmf_subsystem_get_qpairs and
//! nvmf_subsystem_get_controllers.

use serde_json::{json, Value};

use super::{check_tgt_name, listener_json, named_subsystem, trtype_name, uuid_string, ByTarget};
use crate::control::Control;
use crate::methods::{decode, Params};
use crate::protocol::RpcError;

fn poll_group_name(reactor: usize) -> String {
    format!("nvmf_tgt_poll_group_{reactor:03}")
}

pub(in crate::methods) fn nvmf_get_stats(ctl: &mut Control, p: Params) -> Result<Value, RpcError> {
    let ByTarget { tgt_name } = decode(p)?;
    check_tgt_name(&tgt_name)?;
    let stats = ctl
        .target
        .poll_group_stats()
        .map_err(|e| RpcError::internal(e.to_string()))?;
    let groups: Vec<Value> = stats
        .iter()
        .map(|s| {
            let transports: Vec<Value> = s
                .transports
                .iter()
                .map(|t| json!({"trtype": trtype_name(t)}))
                .collect();
            json!({
                "name": poll_group_name(s.reactor),
                "admin_qpairs": s.admin_qpairs,
                "io_qpairs": s.io_qpairs,
                "current_admin_qpairs": s.current_admin_qpairs,
                "current_io_qpairs": s.current_io_qpairs,
                "pending_bdev_io": s.pending_bdev_io,
                "completed_nvme_io": s.completed_nvme_io,
                "transports": transports,
            })
        })
        .collect();
    Ok(json!({"tick_rate": crate::methods::framework::TICK_RATE_HZ, "poll_groups": groups}))
}

pub(in crate::methods) fn nvmf_subsystem_get_qpairs(
    ctl: &mut Control,
    p: Params,
) -> Result<Value, RpcError> {
    let sub = named_subsystem(ctl, p)?;
    let mut qpairs = ctl
        .target
        .qpairs(&sub.nqn)
        .map_err(|e| RpcError::internal(e.to_string()))?;
    qpairs.sort_by_key(|q| (q.cntlid, q.qid));
    Ok(qpairs
        .iter()
        .map(|q| {
            json!({
                "cntlid": q.cntlid,
                "qid": q.qid,
                "state": q.state,
                "thread": poll_group_name(q.reactor),
                "hostnqn": q.hostnqn,
                "listen_address": listener_json(&q.listener),
            })
        })
        .collect())
}

pub(in crate::methods) fn nvmf_subsystem_get_controllers(
    ctl: &mut Control,
    p: Params,
) -> Result<Value, RpcError> {
    let sub = named_subsystem(ctl, p)?;
    let nqn = sub.nqn.clone();
    let controllers = ctl
        .target
        .controllers(&nqn)
        .map_err(|e| RpcError::internal(e.to_string()))?;
    let qpairs = ctl
        .target
        .qpairs(&nqn)
        .map_err(|e| RpcError::internal(e.to_string()))?;
    Ok(controllers
        .iter()
        .map(|(cntlid, hostnqn, hostid)| {
            let io = qpairs
                .iter()
                .filter(|q| q.cntlid == *cntlid && q.qid != 0)
                .count();
            json!({
                "cntlid": cntlid,
                "cntrltype": if sub.is_discovery() { "discovery" } else { "io" },
                "hostnqn": hostnqn,
                "hostid": uuid_string(hostid),
                "num_io_qpairs": io,
            })
        })
        .collect())
}
