//! OCI images: manifest and index documents, `auth.json`, registries, layouts, and the
//! containerDisk rules for pulling a disk out of an image's layers.

pub mod auth_file;
pub mod files;
pub mod layout;
pub mod manifest;
pub(crate) mod pull;
pub(crate) mod registry;
