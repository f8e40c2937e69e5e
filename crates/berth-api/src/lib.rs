//! berth-api: wire shapes (DESIGN §2). `proto` holds the awsJson1.1 plumbing (target split, error
//! body, SigV4 credential scope); `agent` the control-plane/agent protocol; one module per AWS
//! service for its request and response shapes (`ecs`, `logs`).

pub mod agent;
pub mod cbor;
pub mod ecs;
pub mod logs;
pub mod proto;
