//! `sersyncctl`: the control client of `sersyncd` over D-Bus. Everything lives in the
//! library (`sersync::ctl`).

fn main() {
    std::process::exit(sersync::ctl::main());
}
