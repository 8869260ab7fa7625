//! What the harness's integration tests share: a scenario from TOML
//! aimed at one target, and run options that sign tokens with the test
//! secret.

use std::time::Duration;

use loadtest::run::Options;
use loadtest::scenario::Scenario;
use switchboard_testkit::switchboard::SECRET;

/// A validated scenario from `text` (without its name) aimed at `target`.
pub fn scenario(text: &str, target: &str) -> Scenario {
    let mut s = Scenario::parse("test", &format!("name='test'\n{text}")).unwrap();
    s.targets = vec![target.to_owned()];
    s.settle = Duration::from_millis(300);
    s.validate().unwrap();
    s
}

/// Run options whose tokens the test processes accept.
pub fn options() -> Options {
    Options {
        secret: Some(SECRET.to_owned()),
        ..Options::default()
    }
}
