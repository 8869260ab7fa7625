//! Compiles `proto/switchboard.proto` with protox (a Rust protobuf compiler),
//! so building needs no system `protoc`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/switchboard.proto");
    let descriptors = protox::compile(["proto/switchboard.proto"], ["proto"])?;
    tonic_prost_build::configure()
        .bytes(".switchboard.v1")
        // Boxed so every `Request` and `Response` stays small: only IM
        // requests and answers carry these.
        .boxed(".switchboard.v1.Request.body.im")
        .boxed(".switchboard.v1.Response.im")
        .compile_fds(descriptors)?;
    Ok(())
}
