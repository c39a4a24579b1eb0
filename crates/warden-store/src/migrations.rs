//! Versioned schema migrations, embedded in the binary.
//!
//! Each backend has its own SQL (types and triggers differ) but the same versions and the
//! same tables. `open` applies the missing ones in one transaction and records each in
//! `schema_version`; a database whose version is newer than the last one here is refused
//! ([`crate::StoreError::SchemaTooNew`]) rather than used with a schema this build does not know.
//! Add a migration by appending a file and a line to both lists; never edit an applied one.

/// One schema change.
pub(crate) struct Migration {
    /// 1, 2, 3, … in order, no gaps.
    pub(crate) version: i64,
    /// Recorded in `schema_version` for operators.
    pub(crate) name: &'static str,
    /// One or more SQL statements.
    pub(crate) sql: &'static str,
}

/// SQLite migrations.
pub(crate) const SQLITE: &[Migration] = &[
    Migration {
        version: 1,
        name: "init",
        sql: include_str!("../migrations/sqlite/0001_init.sql"),
    },
    Migration {
        version: 2,
        name: "audit_retention",
        sql: include_str!("../migrations/sqlite/0002_audit_retention.sql"),
    },
    Migration {
        version: 3,
        name: "seal",
        sql: include_str!("../migrations/sqlite/0003_seal.sql"),
    },
    Migration {
        version: 4,
        name: "ha",
        sql: include_str!("../migrations/sqlite/0004_ha.sql"),
    },
];

/// PostgreSQL migrations.
pub(crate) const POSTGRES: &[Migration] = &[
    Migration {
        version: 1,
        name: "init",
        sql: include_str!("../migrations/postgres/0001_init.sql"),
    },
    Migration {
        version: 2,
        name: "audit_retention",
        sql: include_str!("../migrations/postgres/0002_audit_retention.sql"),
    },
    Migration {
        version: 3,
        name: "seal",
        sql: include_str!("../migrations/postgres/0003_seal.sql"),
    },
    Migration {
        version: 4,
        name: "ha",
        sql: include_str!("../migrations/postgres/0004_ha.sql"),
    },
];

/// The newest version in `list`.
pub(crate) fn latest(list: &[Migration]) -> i64 {
    list.last().map_or(0, |m| m.version)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_consecutive_and_backends_agree() {
        for list in [SQLITE, POSTGRES] {
            for (i, m) in list.iter().enumerate() {
                assert_eq!(m.version, i as i64 + 1, "{}", m.name);
            }
        }
        let names = |l: &[Migration]| l.iter().map(|m| m.name).collect::<Vec<_>>();
        assert_eq!(names(SQLITE), names(POSTGRES));
    }
}
