//! Certificates: `tracepatch certs generate`, the development certificate, and
//! in-cluster self-managed certificates.
