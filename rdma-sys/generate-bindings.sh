#!/usr/bin/env bash
# Regenerates src/bindings.rs from Debian's rdma-core headers.
# Needs: apt-get install libibverbs-dev librdmacm-dev libclang-dev; cargo install bindgen-cli
set -euo pipefail
cd "$(dirname "$0")"
bindgen wrapper.h \
    --allowlist-function '(ibv|rdma|nvmf_ibv)_.*' \
    --allowlist-type '(ibv|rdma)_.*' \
    --allowlist-var '(IBV|RDMA)_.*' \
    --allowlist-type 'sockaddr_in6?' \
    --no-layout-tests \
    --no-doc-comments \
    --default-enum-style moduleconsts \
    --with-derive-default \
    --raw-line '#![allow(non_camel_case_types, non_snake_case, non_upper_case_globals, dead_code, clippy::all)]' \
    -o src/bindings.rs
echo "wrote src/bindings.rs ($(wc -l < src/bindings.rs) lines)"
