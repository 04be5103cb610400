//! `sersyncd`: the replication daemon. Everything lives in the library.

use clap::Parser;
use sersync::daemon::{self, Cli};
use sersync::exit;

fn main() {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => {
            let code = match err.kind() {
                clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion => {
                    exit::OK
                }
                _ => exit::USAGE,
            };
            let _ = err.print();
            std::process::exit(code);
        }
    };
    std::process::exit(daemon::main(cli));
}
