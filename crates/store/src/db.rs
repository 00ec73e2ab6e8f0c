//! The two-dialect machinery every repository module uses.
//!
//! Each repository function holds its statement twice, in a [`Sql`] constant with a `sqlite`
//! and a `postgres` string side by side, and writes its binds and row mapping once inside
//! [`on_backend!`], which expands the body for each pool type. The two strings differ only where
//! the dialects do (placeholders `?` / `?N` vs `$N`, and the odd cast), so a reviewer can diff
//! them line by line.
//!
//! Nothing here knows about any table.

use std::future::Future;

use sqlx::postgres::{PgPool, PgRow};
use sqlx::sqlite::{SqlitePool, SqliteRow};
use sqlx::{Row, Transaction};

/// The connection pool of the database in use.
#[derive(Clone)]
pub(crate) enum Backend {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// One statement in both dialects.
pub(crate) struct Sql {
    pub(crate) sqlite: &'static str,
    pub(crate) postgres: &'static str,
}

/// Which of a [`Sql`]'s strings to run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Dialect {
    Sqlite,
    Postgres,
}

impl Sql {
    /// The statement for `dialect`.
    pub(crate) const fn get(&self, dialect: Dialect) -> &'static str {
        match dialect {
            Dialect::Sqlite => self.sqlite,
            Dialect::Postgres => self.postgres,
        }
    }
}

/// Runs `$body` with `$pool` bound to the store's pool and `$dialect` to its [`Dialect`].
///
/// The body is expanded once per backend, so the same binds and row mapping are type-checked
/// against `SqlitePool` and `PgPool`.
macro_rules! on_backend {
    ($store:expr, |$pool:ident, $dialect:ident| $body:expr) => {
        match {
            $store.count_operation();
            &$store.backend
        } {
            $crate::db::Backend::Sqlite($pool) => {
                let $dialect = $crate::db::Dialect::Sqlite;
                $body
            }
            $crate::db::Backend::Postgres($pool) => {
                let $dialect = $crate::db::Dialect::Postgres;
                $body
            }
        }
    };
}

/// Starting a transaction that will write.
pub(crate) trait BeginWrite {
    type Db: sqlx::Database;

    /// Begins a transaction meant to write.
    ///
    /// On SQLite this is `BEGIN IMMEDIATE`: it takes the write lock at once, so a transaction
    /// that reads then writes cannot fail half-way with `SQLITE_BUSY` when another connection
    /// wrote in between (a deferred transaction cannot upgrade its read snapshot). The busy
    /// handler (`sqlite_busy`) makes it wait for the lock instead. PostgreSQL needs no such thing.
    fn begin_write(
        &self,
    ) -> impl Future<Output = Result<Transaction<'static, Self::Db>, sqlx::Error>> + Send + '_;
}

impl BeginWrite for SqlitePool {
    type Db = sqlx::Sqlite;

    fn begin_write(
        &self,
    ) -> impl Future<Output = Result<Transaction<'static, Self::Db>, sqlx::Error>> + Send + '_ {
        self.begin_with("BEGIN IMMEDIATE")
    }
}

impl BeginWrite for PgPool {
    type Db = sqlx::Postgres;

    fn begin_write(
        &self,
    ) -> impl Future<Output = Result<Transaction<'static, Self::Db>, sqlx::Error>> + Send + '_ {
        self.begin()
    }
}

/// Typed column access shared by both row types, so one mapping function serves both.
pub(crate) trait StoreRow {
    fn text(&self, column: &str) -> Result<String, sqlx::Error>;
    fn opt_text(&self, column: &str) -> Result<Option<String>, sqlx::Error>;
    fn int(&self, column: &str) -> Result<i64, sqlx::Error>;
    fn opt_int(&self, column: &str) -> Result<Option<i64>, sqlx::Error>;
    fn flag(&self, column: &str) -> Result<bool, sqlx::Error>;
    fn opt_flag(&self, column: &str) -> Result<Option<bool>, sqlx::Error>;
    fn bytes(&self, column: &str) -> Result<Vec<u8>, sqlx::Error>;
    fn opt_bytes(&self, column: &str) -> Result<Option<Vec<u8>>, sqlx::Error>;

    /// A text column holding one of `T`'s values.
    fn enumerated<T: DbEnum>(&self, column: &str) -> Result<T, sqlx::Error> {
        let value = self.text(column)?;
        T::from_db(&value).ok_or_else(|| sqlx::Error::ColumnDecode {
            index: column.to_owned(),
            source: format!("unexpected value {value:?} for {}", T::NAME).into(),
        })
    }
}

macro_rules! impl_store_row {
    ($row:ty) => {
        impl StoreRow for $row {
            fn text(&self, column: &str) -> Result<String, sqlx::Error> {
                self.try_get(column)
            }
            fn opt_text(&self, column: &str) -> Result<Option<String>, sqlx::Error> {
                self.try_get(column)
            }
            fn int(&self, column: &str) -> Result<i64, sqlx::Error> {
                self.try_get(column)
            }
            fn opt_int(&self, column: &str) -> Result<Option<i64>, sqlx::Error> {
                self.try_get(column)
            }
            fn flag(&self, column: &str) -> Result<bool, sqlx::Error> {
                self.try_get(column)
            }
            fn opt_flag(&self, column: &str) -> Result<Option<bool>, sqlx::Error> {
                self.try_get(column)
            }
            fn bytes(&self, column: &str) -> Result<Vec<u8>, sqlx::Error> {
                self.try_get(column)
            }
            fn opt_bytes(&self, column: &str) -> Result<Option<Vec<u8>>, sqlx::Error> {
                self.try_get(column)
            }
        }
    };
}

impl_store_row!(SqliteRow);
impl_store_row!(PgRow);

/// A Rust enum stored as text (with a `CHECK` constraint in the schema).
pub trait DbEnum: Sized + Copy {
    /// The type's name, for decode errors.
    const NAME: &'static str;
    /// The stored text.
    fn as_db(self) -> &'static str;
    /// Parses the stored text.
    fn from_db(value: &str) -> Option<Self>;
}

/// Declares a [`DbEnum`] with its stored strings.
macro_rules! db_enum {
    (
        $(#[$meta:meta])*
        pub enum $name:ident { $( $(#[$vmeta:meta])* $variant:ident = $text:literal ),+ $(,)? }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name { $( $(#[$vmeta])* $variant ),+ }

        impl $crate::db::DbEnum for $name {
            const NAME: &'static str = stringify!($name);
            fn as_db(self) -> &'static str {
                match self { $( $name::$variant => $text ),+ }
            }
            fn from_db(value: &str) -> Option<Self> {
                match value { $( $text => Some($name::$variant), )+ _ => None }
            }
        }

        impl $name {
            /// The text stored in the database (also a stable name for logs and APIs).
            pub fn as_str(self) -> &'static str {
                $crate::db::DbEnum::as_db(self)
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl std::str::FromStr for $name {
            type Err = $crate::db::UnknownValue;
            fn from_str(value: &str) -> Result<Self, Self::Err> {
                <$name as $crate::db::DbEnum>::from_db(value)
                    .ok_or($crate::db::UnknownValue { type_name: stringify!($name) })
            }
        }
    };
}

/// A string that names none of an enum's values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a valid {type_name}")]
pub struct UnknownValue {
    /// The enum's name.
    pub type_name: &'static str,
}

/// A fresh id: a UUIDv7 as text, so ids sort by creation time.
pub fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// Converts a caller's `limit` to the bound value, never below 1 nor above `max`.
pub(crate) fn page_limit(limit: u32, max: u32) -> i64 {
    i64::from(limit.clamp(1, max))
}

/// The largest page any listing returns.
pub(crate) const MAX_PAGE: u32 = 1000;
