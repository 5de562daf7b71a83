//! What a driver error means for the caller: the one place that reads SQLSTATEs, SQLite result
//! codes and driver error kinds. `kizuna_store::db_error` turns a [`Fault`] into the API error.
//!
//! A database that cannot be reached, a connection that died, a server that is shutting down or
//! has no connection slot left are all [`Fault::Unreachable`]: the work was not done (a
//! transaction on a lost connection is rolled back) and the same call can be retried.

/// The meaning of a driver error.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// The database cannot be reached or the connection was lost: retry later.
    Unreachable,
    /// Concurrent transactions conflicted (deadlock, serialization failure, SQLite busy): the
    /// transaction was rolled back and can be retried at once.
    Conflict,
    /// A unique constraint refused a row; the constraint's name, when the driver gives it.
    UniqueViolation(String),
    /// Anything else: a defect or an unexpected failure.
    Other,
}

/// SQLSTATEs (PostgreSQL) that mean the connection or the server is gone or full:
/// `57P01` admin_shutdown, `57P02` crash_shutdown, `57P03` cannot_connect_now, `57P05`
/// idle_session_timeout, `25P03` idle_in_transaction_session_timeout (each ends the
/// connection). Class `08` (connection exception) and class `53` (insufficient resources,
/// `53300` too_many_connections among them) are matched by prefix.
const UNREACHABLE_STATES: &[&str] = &["57P01", "57P02", "57P03", "57P05", "25P03"];

/// Words in a message that say the connection is gone (for errors without a code).
const CLOSED_WORDS: &[&str] = &[
    "connection closed",
    "connection reset",
    "connection refused",
    "connection aborted",
    "broken pipe",
    "unexpected eof",
    "closed the connection",
    "accepting connections",
    "terminating connection",
];

/// Classifies a driver error.
pub fn classify(error: &sqlx::Error) -> Fault {
    match error {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => Fault::Unreachable,
        sqlx::Error::Database(db) => {
            let code = db.code().unwrap_or_default();
            if db.is_unique_violation() {
                return Fault::UniqueViolation(db.constraint().unwrap_or_default().to_owned());
            }
            if code.len() == 5 {
                sqlstate(&code, db.message())
            } else {
                sqlite_code(&code)
            }
        }
        sqlx::Error::Protocol(message) if says_closed(message) => Fault::Unreachable,
        sqlx::Error::AnyDriverError(source) if says_closed(&source.to_string()) => {
            Fault::Unreachable
        }
        _ => Fault::Other,
    }
}

/// Whether the error means the database cannot be reached now.
pub fn is_unreachable(error: &sqlx::Error) -> bool {
    classify(error) == Fault::Unreachable
}

fn sqlstate(code: &str, message: &str) -> Fault {
    if code.starts_with("08") || code.starts_with("53") || UNREACHABLE_STATES.contains(&code) {
        return Fault::Unreachable;
    }
    match code {
        // deadlock_detected, serialization_failure
        "40P01" | "40001" => Fault::Conflict,
        // object_not_in_prerequisite_state: `database "x" is not currently accepting
        // connections` (ALLOW_CONNECTIONS false) and its kin
        "55000" if says_closed(message) => Fault::Unreachable,
        _ => Fault::Other,
    }
}

/// SQLite reports (extended) result codes as decimal numbers; the primary code is the low byte.
fn sqlite_code(code: &str) -> Fault {
    const SQLITE_BUSY: i64 = 5;
    const SQLITE_LOCKED: i64 = 6;
    match code.parse::<i64>().map(|c| c & 0xff) {
        Ok(SQLITE_BUSY | SQLITE_LOCKED) => Fault::Conflict,
        _ => Fault::Other,
    }
}

fn says_closed(message: &str) -> bool {
    let message = message.to_ascii_lowercase();
    CLOSED_WORDS.iter().any(|words| message.contains(words))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlstates_are_classified() {
        for code in [
            "08000", "08006", "08001", "57P01", "57P02", "57P03", "53300", "53100", "53000",
        ] {
            assert_eq!(sqlstate(code, "x"), Fault::Unreachable, "{code}");
        }
        assert_eq!(sqlstate("40P01", "x"), Fault::Conflict);
        assert_eq!(sqlstate("40001", "x"), Fault::Conflict);
        assert_eq!(
            sqlstate(
                "55000",
                "database \"leads\" is not currently accepting connections"
            ),
            Fault::Unreachable
        );
        assert_eq!(
            sqlstate("55000", "cannot execute nextval() yet"),
            Fault::Other
        );
        assert_eq!(sqlstate("42P01", "relation does not exist"), Fault::Other);
        assert_eq!(sqlstate("23505", "duplicate key"), Fault::Other);
    }

    #[test]
    fn sqlite_busy_is_a_conflict() {
        assert_eq!(sqlite_code("5"), Fault::Conflict);
        assert_eq!(sqlite_code("517"), Fault::Conflict);
        assert_eq!(sqlite_code("6"), Fault::Conflict);
        assert_eq!(sqlite_code("1"), Fault::Other);
        assert_eq!(sqlite_code("2067"), Fault::Other);
    }

    #[test]
    fn driver_errors_that_mean_a_lost_connection_are_unreachable() {
        let refused = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        assert!(is_unreachable(&sqlx::Error::Io(refused)));
        assert!(is_unreachable(&sqlx::Error::PoolTimedOut));
        assert!(is_unreachable(&sqlx::Error::PoolClosed));
        assert!(is_unreachable(&sqlx::Error::WorkerCrashed));
        assert!(is_unreachable(&sqlx::Error::Protocol(
            "server closed the connection unexpectedly".into()
        )));
        assert!(!is_unreachable(&sqlx::Error::Protocol(
            "unknown message type: 'x'".into()
        )));
        assert!(!is_unreachable(&sqlx::Error::RowNotFound));
    }
}
