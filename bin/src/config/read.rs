//! The parsed document, table by table, into the `Raw*` structs: which keys each table has,
//! their types, and which are required (`tree.rs` does the reading and its errors).

use super::tree::Table;
use super::*;

impl Doc<'_> {
    pub(super) fn read(&self, root: &toml_edit::Table) -> Result<RawFile, ConfigError> {
        let top = Table::top(self, root, FILE_KEYS)?;
        Ok(RawFile {
            global: top.section("global", GLOBAL_KEYS, global)?,
            transport: top.section("transport", TRANSPORT_KEYS, transport)?,
            bdev: top.tables("bdev", BDEV_KEYS, bdev)?,
            subsystem: top.tables("subsystem", SUBSYSTEM_KEYS, subsystem)?,
        })
    }
}

fn global(t: &Table) -> Result<RawGlobal, ConfigError> {
    Ok(RawGlobal {
        reactor_mask: t.opt("reactor_mask")?,
        idle_sleep_us: t.opt("idle_sleep_us")?,
        interrupt_mode: t.opt("interrupt_mode")?,
        interrupt_after_idle_us: t.opt("interrupt_after_idle_us")?,
    })
}

fn transport(t: &Table) -> Result<RawTransport, ConfigError> {
    Ok(RawTransport {
        max_queue_depth: t.opt("max_queue_depth")?,
        max_admin_queue_depth: t.opt("max_admin_queue_depth")?,
        max_queues_per_controller: t.opt("max_queues_per_controller")?,
        in_capsule_data_size: t.opt("in_capsule_data_size")?,
        max_io_size: t.opt("max_io_size")?,
        io_unit_size: t.opt("io_unit_size")?,
        acceptor_poll_period_us: t.opt("acceptor_poll_period_us")?,
        num_shared_buffers: t.opt("num_shared_buffers")?,
        srq: t.opt("srq")?,
        srq_depth: t.opt("srq_depth")?,
        c2h_success: t.opt("c2h_success")?,
    })
}

fn bdev(t: &Table) -> Result<RawBdev, ConfigError> {
    Ok(RawBdev {
        name: t.req("name", "\"Malloc0\"")?,
        kind: t.req("kind", "\"malloc\"")?,
        num_blocks: t.opt("num_blocks")?,
        block_size: t.opt("block_size")?,
        numa_node: t.opt("numa_node")?,
        traddr: t.opt("traddr")?,
        io_timeout_ms: t.opt("io_timeout_ms")?,
    })
}

fn subsystem(t: &Table) -> Result<RawSubsystem, ConfigError> {
    Ok(RawSubsystem {
        nqn: t.req("nqn", "\"nqn.2016-06.io.spdk:cnode1\"")?,
        serial: t.opt("serial")?,
        model: t.opt("model")?,
        allow_any_host: t
            .opt::<bool>("allow_any_host")?
            .is_some_and(|v| *v.get_ref()),
        hosts: t.strings("hosts")?,
        max_namespaces: t.opt("max_namespaces")?,
        listener: t.tables("listener", LISTENER_KEYS, listener)?,
        namespace: t.tables("namespace", NAMESPACE_KEYS, namespace)?,
    })
}

fn listener(t: &Table) -> Result<RawListener, ConfigError> {
    Ok(RawListener {
        trtype: t.req("trtype", "\"rdma\"")?,
        traddr: t.req("traddr", "\"192.168.1.10\"")?,
        trsvcid: t.opt("trsvcid")?,
    })
}

fn namespace(t: &Table) -> Result<RawNamespace, ConfigError> {
    Ok(RawNamespace {
        bdev: t.req("bdev", "\"Malloc0\"")?,
        nsid: t.opt("nsid")?,
        nguid: t.opt("nguid")?,
        uuid: t.opt("uuid")?,
    })
}
