//! The CLI's failures and the exit code each maps to: 2 for anything the operator typed wrong (nothing was
//! done), 1 for anything that went wrong while doing it.

/// Why a command failed. Every message is one line that says what to do next.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum CliError {
    /// The command line cannot work as written (bad URL, nothing named, no cache given); nothing was done.
    #[error("{0}")]
    Usage(String),
    /// The admin API answered 401 or 403.
    #[error("the admin API refused the token: pass --admin-token or set ETAGD_ADMIN_TOKEN")]
    TokenRefused,
    /// A server could not be reached, answered something unexpected, or the work was only partly done.
    #[error("{0}")]
    Failed(String),
}

impl CliError {
    /// The process exit code: 2 for usage errors (as clap uses for its own), 1 for everything else.
    pub(crate) fn exit_code(&self) -> u8 {
        match self {
            Self::Usage(_) => 2,
            Self::TokenRefused | Self::Failed(_) => 1,
        }
    }

    /// The message on one line: some underlying errors span several, and scripts read stderr line by line.
    pub(crate) fn one_line(&self) -> String {
        self.to_string().split_whitespace().collect::<Vec<_>>().join(" ")
    }
}

impl From<etagd_client::key::KeyError> for CliError {
    fn from(error: etagd_client::key::KeyError) -> Self {
        Self::Usage(error.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_and_single_lines() {
        let check = |error: CliError, code: u8, line: &str| {
            assert_eq!(error.exit_code(), code, "{error:?}");
            assert_eq!(error.one_line(), line);
        };
        check(CliError::Usage("bad\n  url".into()), 2, "bad url");
        check(
            CliError::TokenRefused,
            1,
            "the admin API refused the token: pass --admin-token or set ETAGD_ADMIN_TOKEN",
        );
        check(CliError::Failed("down".into()), 1, "down");
    }
}
