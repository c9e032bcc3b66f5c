//! loadgen (skeleton; see ARCHITECTURE.md).
#![forbid(unsafe_code)]
