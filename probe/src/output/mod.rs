//! Printers: they format a [`ProbeReport`](meshbench_schema::ProbeReport) and never measure.

pub mod json;
pub mod junit;
pub mod prometheus;
pub mod table;
