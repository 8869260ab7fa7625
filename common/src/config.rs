//! Settings from flags, `SWITCHBOARD_*` environment variables and an
//! optional TOML file given by `--config FILE`: flags win over env, env
//! over the file, the file over built-in defaults.
//!
//! Each binary declares its settings once, as a clap `Parser` whose args
//! carry `env = "SWITCHBOARD_…"`. The file's keys are the long flag names
//! (`edge-addr` or `edge_addr`). File values are fed to clap as if they were
//! flags placed before the real ones, only for settings that neither a flag
//! nor an env var set, so clap's own precedence does the rest.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use clap::parser::ValueSource;
use clap::{ArgMatches, CommandFactory, FromArgMatches};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(transparent)]
    Cli(#[from] clap::Error),
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path} is not valid TOML: {source}")]
    Parse {
        path: PathBuf,
        source: toml::de::Error,
    },
    #[error("config file {path}: unknown setting `{key}`")]
    UnknownKey { path: PathBuf, key: String },
    #[error("config file {path}: setting `{key}` must be a string, number or boolean")]
    BadValue { path: PathBuf, key: String },
}

/// Parses `args` (including the program name) into `T`, overlaying the
/// file named by the `config` argument, if `T` has one and it is set.
pub fn load_from<T>(args: Vec<OsString>) -> Result<T, ConfigError>
where
    T: CommandFactory + FromArgMatches,
{
    let command = T::command().args_override_self(true);
    let first = command.clone().try_get_matches_from(&args)?;
    let Some(path) = config_path(&first) else {
        return Ok(T::from_arg_matches(&first)?);
    };
    let file_args = file_arguments(&command, &first, &path)?;
    let mut merged = Vec::with_capacity(args.len() + file_args.len());
    merged.extend(args.first().cloned());
    merged.extend(file_args);
    merged.extend(args.into_iter().skip(1));
    let matches = command.try_get_matches_from(merged)?;
    Ok(T::from_arg_matches(&matches)?)
}

/// [`load_from`] with the process's own arguments. A command-line error,
/// `--help` and `--version` are printed the way clap prints them and end
/// the process (exit 0 for help, 2 for a usage error).
pub fn load<T>() -> Result<T, ConfigError>
where
    T: CommandFactory + FromArgMatches,
{
    match load_from(std::env::args_os().collect()) {
        Err(ConfigError::Cli(e)) => e.exit(),
        other => other,
    }
}

fn config_path(matches: &ArgMatches) -> Option<PathBuf> {
    matches
        .try_get_one::<PathBuf>("config")
        .ok()
        .flatten()
        .cloned()
}

fn file_arguments(
    command: &clap::Command,
    matches: &ArgMatches,
    path: &Path,
) -> Result<Vec<OsString>, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    let table: toml::Table = text.parse().map_err(|source| ConfigError::Parse {
        path: path.to_owned(),
        source,
    })?;
    let mut out = Vec::new();
    for (key, value) in table {
        let id = key.replace('-', "_");
        let arg = command
            .get_arguments()
            .find(|arg| arg.get_id().as_str() == id && arg.get_long().is_some())
            .ok_or_else(|| ConfigError::UnknownKey {
                path: path.to_owned(),
                key: key.clone(),
            })?;
        let already_set = matches!(
            matches.value_source(arg.get_id().as_str()),
            Some(ValueSource::CommandLine | ValueSource::EnvVariable)
        );
        if already_set {
            continue;
        }
        let long = format!("--{}", arg.get_long().unwrap_or_default());
        let takes_value = arg.get_action().takes_values();
        match value {
            toml::Value::Boolean(flag) if !takes_value => {
                if flag {
                    out.push(long.into());
                }
            }
            toml::Value::String(s) => out.push(format!("{long}={s}").into()),
            toml::Value::Integer(i) => out.push(format!("{long}={i}").into()),
            toml::Value::Float(f) => out.push(format!("{long}={f}").into()),
            toml::Value::Boolean(b) => out.push(format!("{long}={b}").into()),
            _ => {
                return Err(ConfigError::BadValue {
                    path: path.to_owned(),
                    key,
                });
            }
        }
    }
    Ok(out)
}

/// Parses `90s`, `15m`, `1h` or plain seconds; `500ms` for sub-second values.
pub fn duration(text: &str) -> Result<std::time::Duration, String> {
    if let Some(ms) = text.strip_suffix("ms") {
        return ms
            .parse()
            .map(std::time::Duration::from_millis)
            .map_err(|_| format!("`{text}` is not a duration"));
    }
    crate::auth::parse_ttl(text).map(std::time::Duration::from_secs)
}

/// `<host>-<random>`: unique enough to tell processes apart in logs and membership.
pub fn default_id(role: &str) -> String {
    let host: String = std::fs::read_to_string("/etc/hostname")
        .unwrap_or_default()
        .trim()
        .chars()
        // Ids appear in NATS subjects: keep them to [A-Za-z0-9_-].
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .take(64)
        .collect();
    let host = if host.is_empty() {
        role.to_owned()
    } else {
        host
    };
    format!("{host}-{role}-{:06x}", rand::random::<u32>() & 0xff_ffff)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser, Debug)]
    struct Settings {
        #[arg(long)]
        config: Option<PathBuf>,
        #[arg(
            long,
            env = "SWITCHBOARD_TEST_CONFIG_ADDR",
            default_value = "0.0.0.0:1"
        )]
        addr: String,
        #[arg(long, default_value_t = 5)]
        limit: u32,
        #[arg(long)]
        verbose: bool,
    }

    fn args(list: &[&str]) -> Vec<OsString> {
        std::iter::once("prog")
            .chain(list.iter().copied())
            .map(OsString::from)
            .collect()
    }

    fn write(text: &str) -> tempfile_path::TempPath {
        tempfile_path::TempPath::with(text)
    }

    /// A tiny self-deleting temp file, to avoid a dependency for one test.
    mod tempfile_path {
        pub struct TempPath(pub std::path::PathBuf);
        impl TempPath {
            pub fn with(text: &str) -> Self {
                let path = std::env::temp_dir().join(format!(
                    "switchboard-config-{}-{}.toml",
                    std::process::id(),
                    rand::random::<u64>()
                ));
                std::fs::write(&path, text).expect("write temp config");
                Self(path)
            }
        }
        impl Drop for TempPath {
            fn drop(&mut self) {
                let _ = std::fs::remove_file(&self.0);
            }
        }
    }

    #[test]
    fn durations() {
        use std::time::Duration;
        assert_eq!(duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(duration("2"), Ok(Duration::from_secs(2)));
        assert!(duration("soon").is_err());
    }

    #[test]
    fn defaults_without_file() {
        let s: Settings = load_from(args(&[])).unwrap();
        assert_eq!(s.addr, "0.0.0.0:1");
        assert_eq!(s.limit, 5);
        assert!(!s.verbose);
    }

    #[test]
    fn file_fills_unset_settings_and_flags_win() {
        let file = write("addr = \"1.2.3.4:5\"\nlimit = 9\nverbose = true\n");
        let path = file.0.to_str().unwrap().to_owned();
        let s: Settings = load_from(args(&["--config", &path, "--limit", "7"])).unwrap();
        assert_eq!(s.addr, "1.2.3.4:5");
        assert_eq!(s.limit, 7, "a flag beats the file");
        assert!(s.verbose);
    }

    #[test]
    fn unknown_file_key_is_an_error() {
        let file = write("nope = 1\n");
        let path = file.0.to_str().unwrap().to_owned();
        let err = load_from::<Settings>(args(&["--config", &path])).unwrap_err();
        assert!(matches!(err, ConfigError::UnknownKey { .. }), "{err}");
    }

    #[test]
    fn bad_toml_is_an_error() {
        let file = write("addr = \n");
        let path = file.0.to_str().unwrap().to_owned();
        let err = load_from::<Settings>(args(&["--config", &path])).unwrap_err();
        assert!(matches!(err, ConfigError::Parse { .. }), "{err}");
    }
}
