//! The request pipeline.

/// The gateway.
#[derive(Debug)]
pub struct Gateway;
/// Connection facts.
#[derive(Debug)]
pub struct ConnectionInfo;
/// Access record.
#[derive(Debug)]
pub struct AccessRecord;
/// A handled request.
#[derive(Debug)]
pub struct Handled;
