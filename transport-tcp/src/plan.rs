//! How a command's data moves over NVMe/TCP, from its SGL: in the capsule, by R2T and
//! H2CData, or by C2HData. A transport data block SGL (what Linux sends for data that is
//! not in the capsule) names only a length; keyed SGLs belong to RDMA and are refused.

use nvme_spec::{Sgl, Sqe, Status};
use nvmf::transport::{data_sgl, Xfer};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TcpPlan {
    None,
    InCapsule { len: u32 },
    FromHost { len: u32 },
    ToHost { len: u32 },
}

/// The data plan of `cmd`, with the statuses the spec names for what cannot be served.
pub fn plan(cmd: &Sqe, in_capsule_limit_bytes: u32, max_io_bytes: u32) -> Result<TcpPlan, Status> {
    let Some((sgl, xfer)) = data_sgl(cmd, max_io_bytes)? else {
        return Ok(TcpPlan::None);
    };
    let to_controller = xfer == Xfer::HostToController;
    match sgl {
        Sgl::Transport { len } if to_controller => Ok(TcpPlan::FromHost { len }),
        Sgl::Transport { len } => Ok(TcpPlan::ToHost { len }),
        Sgl::InCapsule { offset, len } => {
            if !to_controller {
                return Err(Status::SGL_DESCRIPTOR_TYPE_INVALID);
            }
            // Data starts right after the SQE: Linux never sends an offset.
            if offset != 0 {
                return Err(Status::SGL_OFFSET_INVALID);
            }
            if len > in_capsule_limit_bytes {
                return Err(Status::DATA_SGL_LENGTH_INVALID);
            }
            Ok(TcpPlan::InCapsule { len })
        }
        Sgl::Keyed { .. } | Sgl::DataBlock { .. } => Err(Status::SGL_DESCRIPTOR_TYPE_INVALID),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nvme_spec::opcode::io;
    use nvme_spec::SglDescriptor;

    fn cmd(op: u8, sgl: SglDescriptor) -> Sqe {
        let mut s = Sqe::new(op, 1);
        s.dptr = sgl;
        s
    }

    #[test]
    fn transport_data_blocks_move_by_r2t_or_c2h() {
        let w = cmd(io::WRITE, SglDescriptor::transport_data_block(8192));
        assert_eq!(plan(&w, 4096, 1 << 20), Ok(TcpPlan::FromHost { len: 8192 }));
        let r = cmd(io::READ, SglDescriptor::transport_data_block(4096));
        assert_eq!(plan(&r, 4096, 1 << 20), Ok(TcpPlan::ToHost { len: 4096 }));
    }

    #[test]
    fn in_capsule_data_is_bounded_and_starts_after_the_sqe() {
        let w = cmd(io::WRITE, SglDescriptor::data_block(0, 4096));
        assert_eq!(
            plan(&w, 4096, 1 << 20),
            Ok(TcpPlan::InCapsule { len: 4096 })
        );
        let big = cmd(io::WRITE, SglDescriptor::data_block(0, 4097));
        assert_eq!(
            plan(&big, 4096, 1 << 20),
            Err(Status::DATA_SGL_LENGTH_INVALID)
        );
        let off = cmd(io::WRITE, SglDescriptor::data_block(16, 16));
        assert_eq!(plan(&off, 4096, 1 << 20), Err(Status::SGL_OFFSET_INVALID));
        let read_in_capsule = cmd(io::READ, SglDescriptor::data_block(0, 512));
        assert_eq!(
            plan(&read_in_capsule, 4096, 1 << 20),
            Err(Status::SGL_DESCRIPTOR_TYPE_INVALID)
        );
    }

    #[test]
    fn keyed_sgls_and_oversized_transfers_are_refused() {
        let keyed = cmd(io::READ, SglDescriptor::keyed(0x1000, 4096, 7, false));
        assert_eq!(
            plan(&keyed, 4096, 1 << 20),
            Err(Status::SGL_DESCRIPTOR_TYPE_INVALID)
        );
        let huge = cmd(io::READ, SglDescriptor::transport_data_block((1 << 20) + 1));
        assert_eq!(
            plan(&huge, 4096, 1 << 20),
            Err(Status::DATA_SGL_LENGTH_INVALID)
        );
    }
}
