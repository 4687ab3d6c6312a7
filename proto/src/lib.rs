//! The generated protobuf and tonic code of `identity.v1`, and its encoded descriptor set for
//! server reflection. Nothing hand-written lives here.

#![allow(clippy::all)]

pub mod identity {
    pub mod v1 {
        tonic::include_proto!("identity.v1");
    }
}

pub use identity::v1 as pb;

/// The `FileDescriptorSet` of `identity.v1` and every file it imports.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/identity_descriptor.bin"));
