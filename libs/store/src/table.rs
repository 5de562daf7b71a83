//! How a protobuf resource maps onto a table: its name pattern, indexed columns and metadata.
//!
//! Each resource table has the standard columns `id`, `parent`, `data` (the encoded message),
//! `version` (the etag), `create_time`, `update_time` (microseconds, UTC), `writer_revision`
//! (the schema revision of the binary that last wrote the row), plus the indexed columns the
//! resource declares for filtering and ordering, keyed by `(parent, id)`. A migration creating a
//! new resource table writes the standard columns as the `{{RESOURCE_COLUMNS}}` token
//! (`kizuna_db::RESOURCE_COLUMNS`). Indexed columns are NOT NULL (empty string or zero when
//! unset) so keyset pagination never meets a NULL.

use prost_types::Timestamp;

/// The SQL type of an indexed column, which also decides how filter values are read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ColumnKind {
    /// Text, compared as written; `:` means "contains".
    Text,
    /// 64-bit integer.
    Int,
    /// Floating point.
    Float,
    /// An enum stored as its short name (e.g. `MQL`).
    Enum,
    /// Microseconds since the epoch; filter values are RFC 3339 strings.
    Time,
}

/// One indexed column.
#[derive(Clone, Copy, Debug)]
pub struct Column {
    /// The name callers use in `filter` and `order_by`, e.g. `utm_source` or `stage`.
    pub field: &'static str,
    /// The SQL column name.
    pub sql: &'static str,
    /// Its type.
    pub kind: ColumnKind,
    /// For enum columns: the value prefix callers may write in filters (`LIFECYCLE_STAGE_` lets
    /// `stage = LIFECYCLE_STAGE_MQL` match the stored `MQL`).
    pub prefix: &'static str,
}

impl Column {
    /// A text column whose SQL name equals its field name.
    pub const fn text(field: &'static str) -> Self {
        Self {
            field,
            sql: field,
            kind: ColumnKind::Text,
            prefix: "",
        }
    }
    /// An integer column.
    pub const fn int(field: &'static str) -> Self {
        Self {
            field,
            sql: field,
            kind: ColumnKind::Int,
            prefix: "",
        }
    }
    /// A floating-point column.
    pub const fn float(field: &'static str) -> Self {
        Self {
            field,
            sql: field,
            kind: ColumnKind::Float,
            prefix: "",
        }
    }
    /// An enum column (short names).
    pub const fn enumeration(field: &'static str) -> Self {
        Self {
            field,
            sql: field,
            kind: ColumnKind::Enum,
            prefix: "",
        }
    }
    /// The same column, accepting `prefix` before enum values in filters.
    pub const fn prefixed(self, prefix: &'static str) -> Self {
        Self { prefix, ..self }
    }
    /// A time column (microseconds).
    pub const fn time(field: &'static str) -> Self {
        Self {
            field,
            sql: field,
            kind: ColumnKind::Time,
            prefix: "",
        }
    }
}

/// The standard columns every resource table has and callers may filter and order by.
pub const STANDARD_COLUMNS: [Column; 2] =
    [Column::time("create_time"), Column::time("update_time")];

/// A value bound to a query.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    /// Text.
    Text(String),
    /// Integer (also times and booleans).
    Int(i64),
    /// Floating point.
    Float(f64),
    /// Bytes (encoded messages).
    Bytes(Vec<u8>),
}

impl From<&str> for Value {
    fn from(value: &str) -> Self {
        Value::Text(value.to_owned())
    }
}
impl From<String> for Value {
    fn from(value: String) -> Self {
        Value::Text(value)
    }
}
impl From<i64> for Value {
    fn from(value: i64) -> Self {
        Value::Int(value)
    }
}
impl From<i32> for Value {
    fn from(value: i32) -> Self {
        Value::Int(i64::from(value))
    }
}
impl From<f64> for Value {
    fn from(value: f64) -> Self {
        Value::Float(value)
    }
}
impl From<bool> for Value {
    fn from(value: bool) -> Self {
        Value::Int(i64::from(value))
    }
}

/// A resource kept in a table. Implemented by a marker type in the owning service.
pub trait Table: Send + Sync + 'static {
    /// The protobuf message.
    type Message: prost::Message + Default + Clone + Send + Sync + 'static;
    /// Kind for messages, e.g. `Lead`.
    const KIND: &'static str;
    /// SQL table name.
    const TABLE: &'static str;
    /// The collection segment of the name, e.g. `activities` in `leads/1/activities/2`.
    const COLLECTION: &'static str;
    /// The parent's collection for child resources, e.g. `Some("leads")`.
    const PARENT: Option<&'static str>;
    /// Event type prefix, e.g. `lead` for `lead.created`.
    const EVENT_PREFIX: &'static str;
    /// Full protobuf type name, e.g. `kizuna.leads.v1.Lead`.
    const PROTO_NAME: &'static str;
    /// The order a `List` call without `order_by` gets (AIP-132 syntax).
    const DEFAULT_ORDER: &'static str = "create_time desc";
    /// Indexed columns, in the order [`Table::values`] returns them.
    const COLUMNS: &'static [Column];
    /// The indexed columns a unique index covers on their own (non-empty values only), e.g. a
    /// normalized e-mail: when a write is refused by one of them, the store answers
    /// ALREADY_EXISTS naming the resource that holds the value, whichever path found it.
    const UNIQUE: &'static [&'static str] = &[];

    /// The indexed column values of `message`, in [`Table::COLUMNS`] order.
    fn values(message: &Self::Message) -> Vec<Value>;
    /// The message's resource name.
    fn name(message: &Self::Message) -> &str;
    /// Sets the resource name.
    fn set_name(message: &mut Self::Message, name: String);
    /// The message's etag.
    fn etag(message: &Self::Message) -> &str;
    /// Sets etag and times (store-managed, output-only fields).
    fn set_meta(
        message: &mut Self::Message,
        etag: String,
        create_time: Timestamp,
        update_time: Timestamp,
    );
    /// The message's create time, if set.
    fn create_time(message: &Self::Message) -> Option<Timestamp>;
}

/// Implements the metadata accessors of [`Table`] for a message with the standard fields
/// `name`, `etag`, `create_time` and `update_time`.
#[macro_export]
macro_rules! standard_meta {
    () => {
        fn name(message: &Self::Message) -> &str {
            &message.name
        }
        fn set_name(message: &mut Self::Message, name: String) {
            message.name = name;
        }
        fn etag(message: &Self::Message) -> &str {
            &message.etag
        }
        fn set_meta(
            message: &mut Self::Message,
            etag: String,
            create_time: $crate::prost_types::Timestamp,
            update_time: $crate::prost_types::Timestamp,
        ) {
            message.etag = etag;
            message.create_time = Some(create_time);
            message.update_time = Some(update_time);
        }
        fn create_time(message: &Self::Message) -> Option<$crate::prost_types::Timestamp> {
            message.create_time
        }
    };
}

/// The short name of an enum value: `LIFECYCLE_STAGE_MQL` becomes `MQL` given prefix
/// `LIFECYCLE_STAGE_`.
pub fn enum_short_name(full: &str, prefix: &str) -> String {
    full.strip_prefix(prefix).unwrap_or(full).to_owned()
}

/// A resource name taken apart.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParsedName {
    /// The parent resource name, or empty for top-level resources.
    pub parent: String,
    /// The resource id.
    pub id: String,
}

/// Whether `id` is a valid resource id (AIP-122: lower-case letters, digits and hyphens,
/// starting with a letter or digit, at most 63 characters).
pub fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 63
        && id
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !id.starts_with('-')
        && !id.ends_with('-')
}

/// Splits `name` into parent and id for table `T`; `None` when it does not match the pattern.
pub fn parse_name<T: Table>(name: &str) -> Option<ParsedName> {
    let (parent, rest) = match T::PARENT {
        None => (String::new(), name),
        Some(parent_collection) => {
            let (parent, rest) = name.split_once(&format!("/{}/", T::COLLECTION))?;
            parse_parent(parent, parent_collection)?;
            (parent.to_owned(), rest)
        }
    };
    let id = match T::PARENT {
        None => rest.strip_prefix(T::COLLECTION)?.strip_prefix('/')?,
        Some(_) => rest,
    };
    valid_id(id).then(|| ParsedName {
        parent,
        id: id.to_owned(),
    })
}

/// Checks a parent name `<collection>/<id>`; returns the id.
pub fn parse_parent<'a>(parent: &'a str, collection: &str) -> Option<&'a str> {
    let id = parent.strip_prefix(collection)?.strip_prefix('/')?;
    valid_id(id).then_some(id)
}

/// The full name of a resource of `T` with `id` under `parent`.
pub fn format_name<T: Table>(parent: &str, id: &str) -> String {
    if T::PARENT.is_some() {
        format!("{parent}/{}/{id}", T::COLLECTION)
    } else {
        format!("{}/{id}", T::COLLECTION)
    }
}
