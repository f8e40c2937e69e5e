//! berth-api: wire shapes (DESIGN §2). `proto` holds the AWS error and the JSON body parser every
//! handler uses; `operation` the typed operation enum of each AWS service; `agent` the
//! control-plane/agent protocol; one module per AWS service for its request and response shapes
//! (`ecs`, `logs`). The HTTP side (target split, codecs, SigV4) is `berth-apiserver`'s.

pub mod agent;
pub mod ecs;
pub mod logs;
pub mod operation;
pub mod proto;
