/* The rdma-core headers the bindings are generated from (Debian 12: rdma-core 44). */
#include <infiniband/verbs.h>
#include <rdma/rdma_cma.h>

/* Out-of-line versions of the static inline verbs (shim.c). */
int nvmf_ibv_post_send(struct ibv_qp *qp, struct ibv_send_wr *wr, struct ibv_send_wr **bad_wr);
int nvmf_ibv_post_recv(struct ibv_qp *qp, struct ibv_recv_wr *wr, struct ibv_recv_wr **bad_wr);
int nvmf_ibv_poll_cq(struct ibv_cq *cq, int num_entries, struct ibv_wc *wc);
int nvmf_ibv_req_notify_cq(struct ibv_cq *cq, int solicited_only);
struct ibv_mr *nvmf_ibv_reg_mr(struct ibv_pd *pd, void *addr, size_t length, int access);
int nvmf_ibv_query_port(struct ibv_context *context, uint8_t port_num, struct ibv_port_attr *port_attr);
