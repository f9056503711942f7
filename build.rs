//! Generates the tonic service of the `grpc` example from a description in
//! Rust (`tonic_build::manual`), so that a fresh clone builds with cargo
//! alone: no `.proto` file, no `protoc`. The messages are written by hand
//! with `prost`'s derive, in `examples/grpc.rs`.

fn main() {
    let method = |name: &str, route: &str, input: &str, output: &str| {
        tonic_build::manual::Method::builder()
            .name(name)
            .route_name(route)
            .input_type(format!("super::{input}"))
            .output_type(format!("super::{output}"))
            .codec_path("tonic_prost::ProstCodec")
    };
    let accounts = tonic_build::manual::Service::builder()
        .name("Accounts")
        .package("afterward.example")
        .method(method("register", "Register", "RegisterRequest", "RegisterReply").build())
        .method(
            method("follow", "Follow", "FollowRequest", "AccountEvent")
                .server_streaming()
                .build(),
        )
        .build();
    tonic_build::manual::Builder::new().compile(&[accounts]);
}
