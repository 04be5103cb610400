//! `sersync-generator`: the systemd generator that turns each `/etc/sersync/NAME.xml`
//! `<crontab>` into `sersync-fullsync@NAME.timer` drop-ins. Everything lives in
//! [`sersync::generator`].

use std::process::ExitCode;

use sersync::exit;
use sersync::generator::{self, OutputDirs};

fn main() -> ExitCode {
    let dirs = match OutputDirs::from_args(std::env::args_os().skip(1)) {
        Ok(dirs) => dirs,
        Err(err) => {
            eprintln!("sersync-generator: {err}");
            eprintln!("usage: sersync-generator NORMAL_DIR [EARLY_DIR LATE_DIR]");
            return ExitCode::from(exit::USAGE as u8);
        }
    };
    let config_dir = generator::config_dir_from_env();
    // Problems with single configs are reported on stderr; they must not fail the boot.
    generator::run(&dirs, &config_dir, &mut std::io::stderr().lock());
    ExitCode::SUCCESS
}
