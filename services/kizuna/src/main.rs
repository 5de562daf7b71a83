//! `kizuna`: run the whole suite in one process (`up`), one service (`serve`), migrations
//! (`migrate`), mint a bearer token (`token`) or check a running service's health (`health`).

mod cli;

use std::process::ExitCode;

fn main() -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("kizuna: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(cli::run())
}
