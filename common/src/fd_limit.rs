//! The open-file limit: every socket is a file descriptor, so edges,
//! routers, the load harness and the baseline raise their soft limit to
//! the hard limit at start.

/// Raises `RLIMIT_NOFILE`'s soft limit to its hard limit; returns the
/// `(before, after)` soft limits.
pub fn raise_nofile() -> std::io::Result<(u64, u64)> {
    let (soft, hard) = rlimit::Resource::NOFILE.get()?;
    if soft < hard {
        rlimit::Resource::NOFILE.set(hard, hard)?;
    }
    let (now, _) = rlimit::Resource::NOFILE.get()?;
    Ok((soft, now))
}

/// The soft open-file limit of another process, from `/proc/<pid>/limits`.
pub fn nofile_of(pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/limits")).ok()?;
    let line = text.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

#[cfg(test)]
mod tests {
    #[test]
    fn raising_leaves_the_soft_limit_at_the_hard_one() {
        let (_, after) = super::raise_nofile().unwrap();
        let (_, hard) = rlimit::Resource::NOFILE.get().unwrap();
        assert_eq!(after, hard);
        assert_eq!(super::nofile_of(std::process::id()), Some(after));
    }
}
