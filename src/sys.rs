//! Process limits: a Plesk server has thousands of vhost logs, and each open log is a descriptor.

/// Raises the soft limit on open files to the hard limit (Debian's default soft limit is 1024).
/// Returns the limit now in force; failure leaves the old limit, which is only a capacity problem.
pub fn raise_fd_limit() -> libc::rlim_t {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct we pass.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 0;
        }
        if lim.rlim_cur < lim.rlim_max {
            let want = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &want) == 0 {
                return want.rlim_cur;
            }
        }
    }
    lim.rlim_cur
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_limit_is_at_least_what_it_was() {
        let before = super::raise_fd_limit();
        assert!(before > 0);
        assert!(super::raise_fd_limit() >= before);
    }
}
