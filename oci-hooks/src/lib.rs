//! OCI hook: reports container lifecycle and metadata to the p4lb controller.
