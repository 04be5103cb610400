//! `sersyncctl`: the control client. The D-Bus interface is not there yet.

fn main() {
    eprintln!("sersyncctl: not yet: the D-Bus control interface comes with a later release");
    std::process::exit(69);
}
