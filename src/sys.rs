//! Process limits: a Plesk server has thousands of vhost logs, and each open log is a descriptor.

use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};

/// Raises the soft limit on open files to the hard limit (Debian's default soft limit is 1024).
/// Returns the limit now in force (`None`: unlimited); failure leaves the old limit, which is
/// only a capacity problem.
pub fn raise_fd_limit() -> Option<u64> {
    let lim = getrlimit(Resource::Nofile);
    if as_number(lim.current) < as_number(lim.maximum) {
        let want = Rlimit {
            current: lim.maximum,
            maximum: lim.maximum,
        };
        if setrlimit(Resource::Nofile, want).is_ok() {
            return lim.maximum;
        }
    }
    lim.current
}

/// A limit as a number to compare (`None` is unlimited).
fn as_number(limit: Option<u64>) -> u64 {
    limit.unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_limit_is_at_least_what_it_was() {
        use super::{as_number, raise_fd_limit};
        let before = as_number(raise_fd_limit());
        assert!(before > 0);
        assert!(as_number(raise_fd_limit()) >= before);
    }
}
