//! Compiles the inline-verbs shim and links libibverbs and librdmacm.
//! The bindings themselves are pre-generated (src/bindings.rs, see
//! generate-bindings.sh) so building needs no libclang.

fn main() {
    let header = std::path::Path::new("/usr/include/infiniband/verbs.h");
    if !header.exists() {
        println!(
            "cargo:warning=rdma-core headers not found: install them with \
             `apt-get install libibverbs-dev librdmacm-dev` (scripts/test does this)"
        );
    }
    cc::Build::new()
        .file("shim.c")
        .warnings(true)
        .compile("nvmf_rdma_shim");
    println!("cargo:rustc-link-lib=ibverbs");
    println!("cargo:rustc-link-lib=rdmacm");
    println!("cargo:rerun-if-changed=shim.c");
    println!("cargo:rerun-if-changed=wrapper.h");
}
