//! The bounded compiler child for the integration tests, as the `wasftp`
//! binary's hidden `compile-plugin` subcommand is for the server: tests
//! load plugins through `Compiler::Child` with this program.

fn main() -> std::process::ExitCode {
    let args: Vec<_> = std::env::args_os().skip(1).collect();
    wasftp::plugin::compile_child_main(&args)
}
