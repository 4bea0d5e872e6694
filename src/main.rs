//! The `floodwatch` binary: parses arguments, runs the command, maps errors to exit codes.

fn main() {}
