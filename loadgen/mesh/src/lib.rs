//! The embedded mesh (skeleton; see ARCHITECTURE.md).
