//! Typed, located access to a parsed TOML document. Every accessor records
//! an error and returns `None` instead of failing, so that one pass over the
//! file reports every problem in it rather than only the first.

use std::fmt::Display;
use std::path::Path;

use toml_edit::{ArrayOfTables, Item, Table, TableLike, Value};

use crate::error::ConfigError;

/// Where a key or value sits: its dotted path and the byte offset it starts
/// at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Loc {
    pub key: String,
    pub offset: usize,
}

impl Loc {
    pub fn root() -> Self {
        Self { key: String::new(), offset: 0 }
    }

    /// The location of `key` inside this table. Tables that the file only
    /// implies (`b` in `[a.b.c]`) have no position of their own, so they
    /// inherit their parent's.
    pub fn child(&self, key: &str, offset: Option<usize>) -> Self {
        let key = if self.key.is_empty() { key.to_owned() } else { format!("{}.{key}", self.key) };
        Self { key, offset: offset.unwrap_or(self.offset) }
    }

    fn index(&self, index: usize, offset: Option<usize>) -> Self {
        Self { key: format!("{}[{index}]", self.key), offset: offset.unwrap_or(self.offset) }
    }
}

/// A value together with where it was written.
#[derive(Debug, Clone)]
pub(crate) struct Located<T> {
    pub value: T,
    pub loc: Loc,
}

/// One node of the document, whichever TOML syntax produced it.
#[derive(Clone, Copy)]
enum Node<'a> {
    Value(&'a Value),
    Table(&'a Table),
    Tables(&'a ArrayOfTables),
}

impl<'a> Node<'a> {
    fn from_item(item: &'a Item) -> Option<Self> {
        match item {
            Item::None => None,
            Item::Value(v) => Some(Node::Value(v)),
            Item::Table(t) => Some(Node::Table(t)),
            Item::ArrayOfTables(a) => Some(Node::Tables(a)),
        }
    }

    fn start(self) -> Option<usize> {
        let span = match self {
            Node::Value(v) => v.span(),
            Node::Table(t) => t.span(),
            Node::Tables(a) => a.span(),
        };
        span.map(|s| s.start)
    }

    /// What the node is, for "expected X, found Y" messages.
    fn describe(self) -> String {
        match self {
            Node::Value(Value::String(s)) => format!("the string {:?}", s.value()),
            Node::Value(Value::Integer(i)) => format!("the integer {}", i.value()),
            Node::Value(Value::Float(x)) => format!("the number {}", x.value()),
            Node::Value(Value::Boolean(b)) => format!("the boolean {}", b.value()),
            Node::Value(Value::Datetime(d)) => format!("the date-time {}", d.value()),
            Node::Value(Value::Array(_)) => "an array".to_owned(),
            Node::Value(Value::InlineTable(_)) | Node::Table(_) => "a table".to_owned(),
            Node::Tables(_) => "an array of tables".to_owned(),
        }
    }
}

/// A key's value inside a table, with its location.
#[derive(Clone)]
pub(crate) struct Field<'a> {
    node: Node<'a>,
    pub loc: Loc,
}

impl Field<'_> {
    /// The number of elements, when the value is an array.
    pub fn array_len(&self) -> Option<usize> {
        match self.node {
            Node::Value(Value::Array(a)) => Some(a.len()),
            _ => None,
        }
    }
}

/// A table: standard `[x]`, inline `{ .. }`, dotted `x.y = ..` or one
/// `[[x]]` entry. The reader that produced it has already reported any key
/// the table may not have.
#[derive(Clone)]
pub(crate) struct TableView<'a> {
    table: &'a dyn TableLike,
    pub loc: Loc,
}

impl<'a> TableView<'a> {
    /// The value of `key`, if the table has it.
    pub fn get(&self, key: &str) -> Option<Field<'a>> {
        let (k, item) = self.table.get_key_value(key)?;
        let node = Node::from_item(item)?;
        let offset = node.start().or_else(|| k.span().map(|s| s.start));
        Some(Field { node, loc: self.loc.child(key, offset) })
    }

    /// Every entry in file order, for tables whose keys are data (labels).
    pub fn entries(&self) -> Vec<(Located<String>, Field<'a>)> {
        self.table
            .iter()
            .filter_map(|(key, _)| {
                let (k, _) = self.table.get_key_value(key)?;
                let key_loc = self.loc.child(key, k.span().map(|s| s.start));
                let field = self.get(key)?;
                Some((Located { value: key.to_owned(), loc: key_loc }, field))
            })
            .collect()
    }
}

/// Collects errors while the document is read.
pub(crate) struct Reader<'a> {
    file: &'a Path,
    text: &'a str,
    errors: Vec<ConfigError>,
}

impl<'a> Reader<'a> {
    pub fn new(file: &'a Path, text: &'a str) -> Self {
        Self { file, text, errors: Vec::new() }
    }

    pub fn error(&mut self, loc: &Loc, message: impl Into<String>) {
        self.errors.push(ConfigError::at(self.file, self.text, loc.offset, &loc.key, message.into()));
    }

    pub fn into_errors(self) -> Vec<ConfigError> {
        self.errors
    }

    /// The 1-based line of byte `offset`, for messages that point back at
    /// an earlier entry.
    pub fn line(&self, offset: usize) -> usize {
        crate::error::line_column(self.text, offset).0
    }

    pub fn has_errors(&self) -> bool {
        !self.errors.is_empty()
    }

    /// The document's root table, with its keys checked.
    pub fn root<'d>(&mut self, root: &'d Table, allowed: &[&str]) -> TableView<'d> {
        let view = TableView { table: root, loc: Loc::root() };
        self.check_keys(&view, allowed);
        view
    }

    fn type_error(&mut self, field: &Field<'_>, expected: &str) {
        let found = field.node.describe();
        self.error(&field.loc, format!("expected {expected}, found {found}"));
    }

    /// `key` of `table`, or an error saying it is required; `example` shows
    /// a valid line.
    pub fn required<'d>(&mut self, table: &TableView<'d>, key: &str, example: &str) -> Option<Field<'d>> {
        let field = table.get(key);
        if field.is_none() {
            let what = if table.loc.key.is_empty() { "the file".to_owned() } else { table.loc.key.clone() };
            self.error(
                &table.loc.child(key, None),
                format!("this required key is missing from {what}; add it, such as {example}"),
            );
        }
        field
    }

    /// A table whose keys must all be in `allowed`.
    pub fn table<'d>(&mut self, field: &Field<'d>, allowed: &[&str]) -> Option<TableView<'d>> {
        let view = self.any_table(field)?;
        self.check_keys(&view, allowed);
        Some(view)
    }

    /// A table whose keys are free-form.
    pub fn any_table<'d>(&mut self, field: &Field<'d>) -> Option<TableView<'d>> {
        let table: &dyn TableLike = match field.node {
            Node::Table(t) => t,
            Node::Value(Value::InlineTable(t)) => t,
            _ => {
                self.type_error(field, "a table");
                return None;
            }
        };
        Some(TableView { table, loc: field.loc.clone() })
    }

    /// An array of tables, written either as `[[key]]` sections or as an
    /// array of inline tables; every table's keys must be in `allowed`.
    pub fn tables<'d>(&mut self, field: &Field<'d>, allowed: &[&str]) -> Vec<TableView<'d>> {
        let tables: Vec<(&'d dyn TableLike, Option<usize>)> = match field.node {
            Node::Tables(a) => a.iter().map(|t| (t as &dyn TableLike, t.span().map(|s| s.start))).collect(),
            Node::Value(Value::Array(a)) => {
                let mut tables = Vec::new();
                for (i, value) in a.iter().enumerate() {
                    let start = value.span().map(|s| s.start);
                    match value {
                        Value::InlineTable(t) => tables.push((t as &dyn TableLike, start)),
                        other => {
                            let element = Field { node: Node::Value(other), loc: field.loc.index(i, start) };
                            self.type_error(&element, "a table");
                        }
                    }
                }
                tables
            }
            _ => {
                let name = field.loc.key.rsplit('.').next().unwrap_or_default().to_owned();
                self.type_error(field, &format!("an array of tables (one [[{name}]] section per entry)"));
                return Vec::new();
            }
        };
        tables
            .into_iter()
            .enumerate()
            .map(|(i, (table, start))| {
                let view = TableView { table, loc: field.loc.index(i, start) };
                self.check_keys(&view, allowed);
                view
            })
            .collect()
    }

    /// Reports every key of `table` that is not in `allowed`.
    fn check_keys(&mut self, table: &TableView<'_>, allowed: &[&str]) {
        for (key, _) in table.table.iter() {
            if allowed.contains(&key) {
                continue;
            }
            let offset = table.table.get_key_value(key).and_then(|(k, _)| k.span()).map(|s| s.start);
            let hint = match closest(key, allowed) {
                Some(near) => format!(" (did you mean {near:?}?)"),
                None => String::new(),
            };
            let place =
                if table.loc.key.is_empty() { "at the top level".to_owned() } else { format!("in {}", table.loc.key) };
            self.error(
                &table.loc.child(key, offset),
                format!("unknown key {key:?}{hint}; the keys allowed {place} are {}", allowed.join(", ")),
            );
        }
    }

    pub fn string<'d>(&mut self, field: &Field<'d>) -> Option<&'d str> {
        match field.node {
            Node::Value(Value::String(s)) => Some(s.value().as_str()),
            _ => {
                self.type_error(field, "a string");
                None
            }
        }
    }

    pub fn bool(&mut self, field: &Field<'_>) -> Option<bool> {
        match field.node {
            Node::Value(Value::Boolean(b)) => Some(*b.value()),
            _ => {
                self.type_error(field, "true or false");
                None
            }
        }
    }

    pub fn integer(&mut self, field: &Field<'_>) -> Option<i64> {
        match field.node {
            Node::Value(Value::Integer(i)) => Some(*i.value()),
            _ => {
                self.type_error(field, "a whole number");
                None
            }
        }
    }

    /// A string turned into `T` by `parse`, whose error is the message.
    pub fn parse<T, E: Display>(
        &mut self,
        field: &Field<'_>,
        parse: impl FnOnce(&str) -> Result<T, E>,
    ) -> Option<Located<T>> {
        let text = self.string(field)?;
        match parse(text) {
            Ok(value) => Some(Located { value, loc: field.loc.clone() }),
            Err(e) => {
                self.error(&field.loc, e.to_string());
                None
            }
        }
    }

    /// An array whose elements are read by `each`. Elements that fail are
    /// left out (their errors are recorded), so the caller can keep
    /// checking the rest; `None` only when the value is not an array.
    pub fn list<'d, T>(
        &mut self,
        field: &Field<'d>,
        example: &str,
        mut each: impl FnMut(&mut Self, &Field<'d>) -> Option<T>,
    ) -> Option<Vec<T>> {
        let Node::Value(Value::Array(array)) = field.node else {
            self.type_error(field, &format!("an array such as {example}"));
            return None;
        };
        let items = array
            .iter()
            .enumerate()
            .filter_map(|(i, value)| {
                let element =
                    Field { node: Node::Value(value), loc: field.loc.index(i, value.span().map(|s| s.start)) };
                each(self, &element)
            })
            .collect();
        Some(items)
    }

    /// An array of strings, each parsed by `parse`.
    pub fn parsed_list<T, E: Display>(
        &mut self,
        field: &Field<'_>,
        example: &str,
        parse: impl Fn(&str) -> Result<T, E>,
    ) -> Option<Vec<Located<T>>> {
        self.list(field, example, |r, element| r.parse(element, &parse))
    }
}

/// The allowed key a misspelt `key` most likely meant: one within two edits,
/// or differing only in case or `-` for `_`.
pub(crate) fn closest<'k>(key: &str, allowed: &[&'k str]) -> Option<&'k str> {
    let normal = key.to_ascii_lowercase().replace('-', "_");
    allowed
        .iter()
        .map(|a| (edit_distance(&normal, a), *a))
        .filter(|(d, _)| *d <= 2)
        .min_by_key(|(d, _)| *d)
        .map(|(_, a)| a)
}

/// Levenshtein distance, counted in characters.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let substitution = diagonal + usize::from(ca != *cb);
            diagonal = row[j + 1];
            row[j + 1] = substitution.min(row[j] + 1).min(row[j + 1] + 1);
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggests_near_misses_only() {
        let allowed = ["name", "address", "driver", "labels", "gateway"];
        assert_eq!(closest("adress", &allowed), Some("address"));
        assert_eq!(closest("Driver", &allowed), Some("driver"));
        assert_eq!(closest("label", &allowed), Some("labels"));
        assert_eq!(closest("colour", &allowed), None);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
    }
}
