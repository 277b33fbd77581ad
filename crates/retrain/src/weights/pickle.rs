//! A bounded pickle reader for `torch.save` files that never executes anything.
//!
//! Python's unpickler imports and calls whatever a file names; this one only knows the
//! handful of globals `torch.save` uses to rebuild a state dict (an allow-list) and refuses
//! every other name with an error. Values live in an arena indexed by `usize`, so memo
//! references never copy data and the work done is bounded by the length of the input.

use std::collections::HashMap;

use super::DType;

/// Why a pickle could not be read.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum PickleError {
    #[error("the file is truncated (pickle stream ended early at byte {0})")]
    Truncated(usize),
    #[error(
        "refused to load: the file names the Python object `{0}`, which a weights file has no need for \
         (only tensors and dictionaries are read; re-save it with torch.save(model.state_dict(), path))"
    )]
    ForbiddenGlobal(String),
    #[error("unsupported pickle opcode 0x{0:02x} at byte {1}")]
    UnsupportedOpcode(u8, usize),
    #[error("malformed pickle at byte {0}: {1}")]
    Malformed(usize, String),
}

/// A reference to a tensor's bytes inside the container, as `torch._utils._rebuild_tensor*` describes it.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorRef {
    pub storage_key: String,
    pub dtype: DType,
    /// Offset in elements into the storage.
    pub offset: usize,
    pub shape: Vec<usize>,
    pub stride: Vec<usize>,
}

/// One decoded pickle value. Containers hold arena indices.
#[derive(Debug, Clone, PartialEq)]
pub enum Node {
    None,
    Bool(bool),
    Int(i64),
    /// An integer wider than 64 bits (the legacy format's magic number).
    BigInt(Vec<u8>),
    Float(f64),
    Str(String),
    Bytes(Vec<u8>),
    Tuple(Vec<usize>),
    List(Vec<usize>),
    Dict(Vec<(usize, usize)>),
    /// An allowed global (a class or function), kept by name only.
    Global(String),
    /// A storage handed out by the persistent-id mechanism.
    Storage {
        key: String,
        dtype: DType,
        /// Element offset of a legacy storage view into its root storage.
        view_offset: usize,
    },
    Tensor(TensorRef),
}

/// Globals `torch.save` emits for a state dict. Anything else is refused.
const ALLOWED_GLOBALS: &[&str] = &[
    "collections.OrderedDict",
    "torch._utils._rebuild_tensor",
    "torch._utils._rebuild_tensor_v2",
    "torch._utils._rebuild_parameter",
    "torch.FloatStorage",
    "torch.DoubleStorage",
    "torch.HalfStorage",
    "torch.BFloat16Storage",
    "torch.LongStorage",
    "torch.IntStorage",
    "torch.ShortStorage",
    "torch.CharStorage",
    "torch.ByteStorage",
    "torch.BoolStorage",
];

fn storage_dtype(global: &str) -> Option<DType> {
    Some(match global {
        "torch.FloatStorage" => DType::F32,
        "torch.DoubleStorage" => DType::F64,
        "torch.HalfStorage" => DType::F16,
        "torch.BFloat16Storage" => DType::BF16,
        "torch.LongStorage" => DType::I64,
        "torch.IntStorage" => DType::I32,
        "torch.ShortStorage" => DType::I16,
        "torch.CharStorage" => DType::I8,
        "torch.ByteStorage" => DType::U8,
        "torch.BoolStorage" => DType::Bool,
        _ => return None,
    })
}

#[derive(Clone, Copy)]
enum Slot {
    Mark,
    Value(usize),
}

/// Limits that keep a hostile file from using unbounded memory.
const MAX_STACK: usize = 1 << 20;
const MAX_DIMS: usize = 16;
/// Arguments of the calls a checkpoint makes (`_rebuild_tensor_v2` takes 6 or 7).
const MAX_CALL_ARGS: usize = 8;
/// Longest storage key or global name: real ones are a few dozen bytes.
const MAX_NAME: usize = 1024;

/// The decoded pickle: an arena and the index of its root value.
pub struct Pickle {
    pub nodes: Vec<Node>,
    pub root: usize,
    /// Byte length of the pickle stream, up to and including STOP.
    pub len: usize,
}

impl Pickle {
    pub fn node(&self, i: usize) -> &Node {
        &self.nodes[i]
    }

    pub fn as_str(&self, i: usize) -> Option<&str> {
        match &self.nodes[i] {
            Node::Str(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_int(&self, i: usize) -> Option<i64> {
        match self.nodes[i] {
            Node::Int(v) => Some(v),
            Node::Bool(b) => Some(b as i64),
            _ => None,
        }
    }
}

struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], PickleError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.data.len())
            .ok_or(PickleError::Truncated(self.data.len()))?;
        let s = &self.data[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8, PickleError> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, PickleError> {
        Ok(u16::from_le_bytes(self.take(2)?.try_into().unwrap()))
    }
    fn u32(&mut self) -> Result<u32, PickleError> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().unwrap()))
    }
    fn u64(&mut self) -> Result<u64, PickleError> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().unwrap()))
    }
    fn line(&mut self) -> Result<&'a str, PickleError> {
        let rest = &self.data[self.pos..];
        let n = rest
            .iter()
            .position(|&b| b == b'\n')
            .ok_or(PickleError::Truncated(self.data.len()))?;
        let s = std::str::from_utf8(&rest[..n])
            .map_err(|_| PickleError::Malformed(self.pos, "non-UTF-8 text line".into()))?;
        self.pos += n + 1;
        Ok(s)
    }
    fn len_u64(&mut self, n: u64) -> Result<usize, PickleError> {
        let n = usize::try_from(n).map_err(|_| PickleError::Truncated(self.data.len()))?;
        if n > self.data.len() - self.pos {
            return Err(PickleError::Truncated(self.data.len()));
        }
        Ok(n)
    }
}

struct Machine {
    nodes: Vec<Node>,
    stack: Vec<Slot>,
    memo: HashMap<u64, usize>,
    pos: usize,
}

impl Machine {
    fn err(&self, msg: impl Into<String>) -> PickleError {
        PickleError::Malformed(self.pos, msg.into())
    }
    fn push(&mut self, n: Node) -> Result<(), PickleError> {
        if self.stack.len() >= MAX_STACK {
            return Err(self.err("stack too deep"));
        }
        self.nodes.push(n);
        self.stack.push(Slot::Value(self.nodes.len() - 1));
        Ok(())
    }
    fn push_idx(&mut self, i: usize) -> Result<(), PickleError> {
        if self.stack.len() >= MAX_STACK {
            return Err(self.err("stack too deep"));
        }
        self.stack.push(Slot::Value(i));
        Ok(())
    }
    fn pop(&mut self) -> Result<usize, PickleError> {
        match self.stack.pop() {
            Some(Slot::Value(i)) => Ok(i),
            Some(Slot::Mark) => Err(self.err("unexpected mark")),
            None => Err(self.err("stack underflow")),
        }
    }
    fn top(&self) -> Result<usize, PickleError> {
        match self.stack.last() {
            Some(Slot::Value(i)) => Ok(*i),
            _ => Err(self.err("stack underflow")),
        }
    }
    /// Pops everything down to the latest mark.
    fn pop_mark(&mut self) -> Result<Vec<usize>, PickleError> {
        let m = self
            .stack
            .iter()
            .rposition(|s| matches!(s, Slot::Mark))
            .ok_or_else(|| self.err("missing mark"))?;
        let items = self.stack.split_off(m + 1);
        self.stack.pop();
        Ok(items
            .into_iter()
            .map(|s| match s {
                Slot::Value(i) => i,
                Slot::Mark => unreachable!("rposition found the last mark"),
            })
            .collect())
    }
    fn global(&mut self, module: &str, name: &str) -> Result<(), PickleError> {
        let full = format!("{module}.{name}");
        if !ALLOWED_GLOBALS.contains(&full.as_str()) {
            return Err(PickleError::ForbiddenGlobal(full));
        }
        self.push(Node::Global(full))
    }
    fn set_items(&mut self, dict: usize, items: &[usize]) -> Result<(), PickleError> {
        if !items.len().is_multiple_of(2) {
            return Err(self.err("odd number of dict items"));
        }
        match &mut self.nodes[dict] {
            Node::Dict(d) => {
                d.extend(items.chunks(2).map(|kv| (kv[0], kv[1])));
                Ok(())
            }
            _ => Err(self.err("SETITEM on a non-dict")),
        }
    }
    fn append(&mut self, list: usize, items: &[usize]) -> Result<(), PickleError> {
        match &mut self.nodes[list] {
            Node::List(l) => {
                l.extend_from_slice(items);
                Ok(())
            }
            _ => Err(self.err("APPEND on a non-list")),
        }
    }
    /// The items of a tuple of at most `max` items: the tuples read here are short, and a
    /// bound keeps a file from making each of many calls copy one huge tuple.
    fn tuple_items(&self, i: usize, max: usize) -> Result<Vec<usize>, PickleError> {
        match &self.nodes[i] {
            Node::Tuple(t) if t.len() <= max => Ok(t.clone()),
            Node::Tuple(t) => Err(self.err(format!(
                "a tuple of {} items where at most {max} are expected",
                t.len()
            ))),
            _ => Err(self.err("expected a tuple")),
        }
    }
    fn usize_of(&self, i: usize) -> Result<usize, PickleError> {
        match self.nodes[i] {
            Node::Int(v) if v >= 0 => Ok(v as usize),
            _ => Err(self.err("expected a non-negative integer")),
        }
    }
    fn usizes(&self, i: usize) -> Result<Vec<usize>, PickleError> {
        let t = self
            .tuple_items(i, MAX_DIMS)
            .map_err(|_| self.err("tensor has too many dimensions"))?;
        t.into_iter().map(|x| self.usize_of(x)).collect()
    }

    /// `persistent_load`: `('storage', torch.XStorage, key, location, numel[, view])`.
    fn persistent(&mut self, pid: usize) -> Result<Node, PickleError> {
        let t = self.tuple_items(pid, MAX_CALL_ARGS)?;
        if t.len() < 5 || self.nodes[t[0]] != Node::Str("storage".into()) {
            return Err(self.err("persistent id is not a tensor storage"));
        }
        let dtype = match &self.nodes[t[1]] {
            Node::Global(g) => storage_dtype(g),
            _ => None,
        }
        .ok_or_else(|| self.err("unknown storage type"))?;
        let key = match &self.nodes[t[2]] {
            Node::Str(s) if s.len() <= MAX_NAME => s.clone(),
            Node::Int(v) => v.to_string(),
            _ => return Err(self.err("storage key is not a string of at most 1024 bytes")),
        };
        // Legacy files may hand out a view: (view_key, offset, size) into a root storage.
        let view_offset = match t.get(5).map(|&v| &self.nodes[v]) {
            Some(Node::Tuple(v)) if v.len() == 3 => self.usize_of(v[1])?,
            _ => 0,
        };
        Ok(Node::Storage {
            key,
            dtype,
            view_offset,
        })
    }

    fn reduce(&mut self, func: usize, args: usize) -> Result<Node, PickleError> {
        let name = match &self.nodes[func] {
            Node::Global(g) => g.clone(),
            _ => return Err(self.err("REDUCE on a value that is not an allowed callable")),
        };
        let a = self.tuple_items(args, MAX_CALL_ARGS)?;
        match name.as_str() {
            "collections.OrderedDict" => Ok(Node::Dict(Vec::new())),
            "torch._utils._rebuild_tensor" | "torch._utils._rebuild_tensor_v2" => {
                if a.len() < 4 {
                    return Err(self.err("tensor rebuild with too few arguments"));
                }
                let (key, dtype, view_offset) = match &self.nodes[a[0]] {
                    Node::Storage {
                        key,
                        dtype,
                        view_offset,
                    } => (key.clone(), *dtype, *view_offset),
                    _ => return Err(self.err("tensor rebuild without a storage")),
                };
                let offset = self
                    .usize_of(a[1])?
                    .checked_add(view_offset)
                    .ok_or_else(|| self.err("tensor offset overflows"))?;
                let shape = self.usizes(a[2])?;
                let stride = self.usizes(a[3])?;
                if shape.len() != stride.len() {
                    return Err(self.err("tensor shape and stride differ in length"));
                }
                Ok(Node::Tensor(TensorRef {
                    storage_key: key,
                    dtype,
                    offset,
                    shape,
                    stride,
                }))
            }
            // Only a tensor is copied: copying a container here would let a small file
            // grow the arena with the square of its size.
            "torch._utils._rebuild_parameter" => match a.first().map(|&t| &self.nodes[t]) {
                Some(t @ Node::Tensor(_)) => Ok(t.clone()),
                Some(_) => Err(self.err("parameter rebuild of something that is not a tensor")),
                None => Err(self.err("parameter rebuild without data")),
            },
            other => Err(PickleError::ForbiddenGlobal(format!("{other}(...)"))),
        }
    }
}

/// Decodes one pickle starting at `data[0]`. Stops at STOP; trailing bytes are left alone.
///
/// Long by design: one match arm per pickle opcode, each a few lines, read against
/// CPython's `pickle.py` table in order; splitting it would scatter that table.
pub fn parse(data: &[u8]) -> Result<Pickle, PickleError> {
    let mut r = Reader { data, pos: 0 };
    let mut m = Machine {
        nodes: Vec::new(),
        stack: Vec::new(),
        memo: HashMap::new(),
        pos: 0,
    };
    loop {
        m.pos = r.pos;
        let op = r.u8()?;
        match op {
            0x80 => {
                r.u8()?;
            } // PROTO
            0x95 => {
                r.u64()?;
            } // FRAME
            b'.' => {
                let root = m.pop()?;
                return Ok(Pickle {
                    nodes: m.nodes,
                    root,
                    len: r.pos,
                });
            }
            b'(' => m.stack.push(Slot::Mark),
            b'0' => {
                m.stack.pop().ok_or_else(|| m.err("POP on empty stack"))?;
            }
            b'1' => {
                m.pop_mark()?;
            }
            b'2' => {
                let t = m.top()?;
                m.push_idx(t)?;
            }
            b'N' => m.push(Node::None)?,
            0x88 => m.push(Node::Bool(true))?,
            0x89 => m.push(Node::Bool(false))?,
            b'J' => {
                let v = r.u32()? as i32 as i64;
                m.push(Node::Int(v))?
            }
            b'K' => {
                let v = r.u8()? as i64;
                m.push(Node::Int(v))?
            }
            b'M' => {
                let v = r.u16()? as i64;
                m.push(Node::Int(v))?
            }
            0x8a | 0x8b => {
                // LONG1 / LONG4: little-endian two's complement of n bytes.
                let n = if op == 0x8a {
                    r.u8()? as usize
                } else {
                    r.u32()? as usize
                };
                let b = r.take(n)?;
                if n > 8 {
                    m.push(Node::BigInt(b.to_vec()))?;
                    continue;
                }
                let mut buf = if b.last().is_some_and(|&x| x & 0x80 != 0) {
                    [0xffu8; 8]
                } else {
                    [0u8; 8]
                };
                buf[..n].copy_from_slice(b);
                m.push(Node::Int(i64::from_le_bytes(buf)))?
            }
            b'I' | b'L' => {
                let line = r.line()?;
                let t = line.trim_end_matches('L');
                let node = match t {
                    "00" => Node::Bool(false),
                    "01" => Node::Bool(true),
                    _ => Node::Int(t.parse().map_err(|_| m.err("bad integer literal"))?),
                };
                m.push(node)?
            }
            b'G' => {
                let v = f64::from_be_bytes(r.take(8)?.try_into().unwrap());
                m.push(Node::Float(v))?
            }
            b'F' => {
                let v = r.line()?.parse().map_err(|_| m.err("bad float literal"))?;
                m.push(Node::Float(v))?
            }
            b'X' | 0x8c | 0x8d => {
                let n = match op {
                    b'X' => r.u32()? as u64,
                    0x8c => r.u8()? as u64,
                    _ => r.u64()?,
                };
                let n = r.len_u64(n)?;
                let s =
                    std::str::from_utf8(r.take(n)?).map_err(|_| m.err("invalid UTF-8 string"))?;
                m.push(Node::Str(s.to_owned()))?
            }
            b'T' | b'U' => {
                // Python 2 byte strings: torch writes ASCII keys with these in old files.
                let n = if op == b'T' {
                    r.u32()? as u64
                } else {
                    r.u8()? as u64
                };
                let n = r.len_u64(n)?;
                let b = r.take(n)?;
                m.push(Node::Str(String::from_utf8_lossy(b).into_owned()))?
            }
            b'B' | b'C' | 0x8e | 0x96 => {
                let n = match op {
                    b'B' => r.u32()? as u64,
                    b'C' => r.u8()? as u64,
                    _ => r.u64()?,
                };
                let n = r.len_u64(n)?;
                m.push(Node::Bytes(r.take(n)?.to_vec()))?
            }
            b'V' | b'S' => {
                let line = r.line()?;
                let s = line.trim_matches(|c| c == '\'' || c == '"');
                m.push(Node::Str(s.to_owned()))?
            }
            b')' => m.push(Node::Tuple(Vec::new()))?,
            b't' => {
                let items = m.pop_mark()?;
                m.push(Node::Tuple(items))?
            }
            0x85..=0x87 => {
                let n = (op - 0x84) as usize;
                let mut items = Vec::with_capacity(n);
                for _ in 0..n {
                    items.push(m.pop()?);
                }
                items.reverse();
                m.push(Node::Tuple(items))?
            }
            b']' => m.push(Node::List(Vec::new()))?,
            b'l' => {
                let items = m.pop_mark()?;
                m.push(Node::List(items))?
            }
            b'}' => m.push(Node::Dict(Vec::new()))?,
            b'd' => {
                let items = m.pop_mark()?;
                m.push(Node::Dict(Vec::new()))?;
                let d = m.top()?;
                m.set_items(d, &items)?
            }
            0x8f => m.push(Node::List(Vec::new()))?, // EMPTY_SET, read as a list
            0x90 => {
                // ADDITEMS
                let items = m.pop_mark()?;
                let s = m.top()?;
                m.append(s, &items)?
            }
            0x91 => {
                let items = m.pop_mark()?;
                m.push(Node::List(items))?
            }
            b'a' => {
                let v = m.pop()?;
                let l = m.top()?;
                m.append(l, &[v])?
            }
            b'e' => {
                let items = m.pop_mark()?;
                let l = m.top()?;
                m.append(l, &items)?
            }
            b's' => {
                let v = m.pop()?;
                let k = m.pop()?;
                let d = m.top()?;
                m.set_items(d, &[k, v])?
            }
            b'u' => {
                let items = m.pop_mark()?;
                let d = m.top()?;
                m.set_items(d, &items)?
            }
            b'p' => {
                let k: u64 = r.line()?.parse().map_err(|_| m.err("bad memo key"))?;
                let t = m.top()?;
                m.memo.insert(k, t);
            }
            b'q' => {
                let k = r.u8()? as u64;
                let t = m.top()?;
                m.memo.insert(k, t);
            }
            b'r' => {
                let k = r.u32()? as u64;
                let t = m.top()?;
                m.memo.insert(k, t);
            }
            0x94 => {
                let k = m.memo.len() as u64;
                let t = m.top()?;
                m.memo.insert(k, t);
            }
            b'g' | b'h' | b'j' => {
                let k = match op {
                    b'g' => r.line()?.parse().map_err(|_| m.err("bad memo key"))?,
                    b'h' => r.u8()? as u64,
                    _ => r.u32()? as u64,
                };
                let i = *m
                    .memo
                    .get(&k)
                    .ok_or_else(|| m.err(format!("memo key {k} not defined")))?;
                m.push_idx(i)?
            }
            b'c' => {
                let module = r.line()?.to_owned();
                let name = r.line()?.to_owned();
                m.global(&module, &name)?
            }
            0x93 => {
                let name = m.pop()?;
                let module = m.pop()?;
                let (module, name) = match (&m.nodes[module], &m.nodes[name]) {
                    (Node::Str(a), Node::Str(b)) if a.len() + b.len() <= MAX_NAME => {
                        (a.clone(), b.clone())
                    }
                    _ => return Err(m.err("STACK_GLOBAL needs two strings of at most 1024 bytes")),
                };
                m.global(&module, &name)?
            }
            b'Q' => {
                let pid = m.pop()?;
                let n = m.persistent(pid)?;
                m.push(n)?
            }
            b'R' => {
                let args = m.pop()?;
                let func = m.pop()?;
                let n = m.reduce(func, args)?;
                m.push(n)?
            }
            b'b' => {
                // BUILD: state for the object below. Only dicts get here (an OrderedDict's
                // `_metadata`), and that state carries no weights, so it is dropped.
                m.pop()?;
                let obj = m.top()?;
                if !matches!(m.nodes[obj], Node::Dict(_)) {
                    return Err(m.err("BUILD on an object that is not a dictionary"));
                }
            }
            // INST, OBJ, NEWOBJ, NEWOBJ_EX, EXT*, PERSID (text), buffers: never needed by a
            // state dict, and the object-creating ones would need an arbitrary class.
            _ => return Err(PickleError::UnsupportedOpcode(op, r.pos - 1)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_os_system() {
        // pickle.dumps(os.system('echo hi')) style payload: GLOBAL posix system + REDUCE.
        let payload = b"\x80\x02cposix\nsystem\nq\x00X\x07\x00\x00\x00echo hiq\x01\x85q\x02Rq\x03.";
        let err = parse(payload).err().unwrap();
        assert_eq!(err, PickleError::ForbiddenGlobal("posix.system".into()));
    }

    #[test]
    fn refuses_stack_global_builtins_eval() {
        let payload = b"\x80\x04\x8c\x08builtins\x94\x8c\x04eval\x94\x93\x94.";
        let err = parse(payload).err().unwrap();
        assert_eq!(err, PickleError::ForbiddenGlobal("builtins.eval".into()));
    }

    #[test]
    fn truncated_stream_is_an_error_not_a_panic() {
        let full = b"\x80\x02}q\x00(X\x01\x00\x00\x00aq\x01K\x05u.";
        for n in 0..full.len() {
            assert!(parse(&full[..n]).is_err(), "prefix of {n} bytes");
        }
        let p = parse(full).unwrap();
        match p.node(p.root) {
            Node::Dict(d) => {
                assert_eq!(d.len(), 1);
                assert_eq!(p.as_str(d[0].0), Some("a"));
                assert_eq!(p.as_int(d[0].1), Some(5));
            }
            other => panic!("expected dict, got {other:?}"),
        }
    }

    #[test]
    fn huge_declared_lengths_do_not_allocate() {
        let payload = b"\x80\x04\x8d\xff\xff\xff\xff\xff\xff\xff\x7f";
        assert!(matches!(parse(payload), Err(PickleError::Truncated(_))));
    }

    /// Protocol 2, `collections.OrderedDict` as memo 0, a tuple of `n` zeros as memo 1, then
    /// `calls` REDUCEs of the one with the other.
    fn many_calls_with_one_long_tuple(n: usize, calls: usize) -> Vec<u8> {
        let mut p = b"\x80\x02ccollections\nOrderedDict\nq\x00(".to_vec();
        for _ in 0..n {
            p.extend_from_slice(b"K\x00");
        }
        p.extend_from_slice(b"tq\x01");
        for _ in 0..calls {
            p.extend_from_slice(b"h\x00h\x01R0");
        }
        p.push(b'.');
        p
    }

    #[test]
    fn a_call_with_a_huge_argument_tuple_is_refused_not_copied() {
        // Each call used to copy the whole tuple: time grew with the square of the file.
        let e = parse(&many_calls_with_one_long_tuple(100_000, 50_000))
            .err()
            .unwrap();
        assert!(e.to_string().contains("at most 8"), "{e}");
        // A short argument tuple still calls.
        assert!(parse(&many_calls_with_one_long_tuple(0, 3)).is_ok());
    }

    #[test]
    fn a_parameter_rebuild_of_a_container_is_refused() {
        // _rebuild_parameter([0, 0, ...]) repeated would copy the list each time.
        let mut p = b"\x80\x02ctorch._utils\n_rebuild_parameter\nq\x00(K\x00K\x00lq\x01".to_vec();
        p.extend_from_slice(b"h\x00h\x01\x85R.");
        let e = parse(&p).err().unwrap();
        assert!(e.to_string().contains("not a tensor"), "{e}");
    }

    #[test]
    fn a_huge_global_name_is_refused_before_it_is_copied() {
        let mut p = b"\x80\x04\x8c\x08builtins\x94\x8d".to_vec();
        p.extend_from_slice(&(1u64 << 20).to_le_bytes());
        p.extend(std::iter::repeat_n(b'a', 1 << 20));
        p.extend_from_slice(b"\x94\x93.");
        let e = parse(&p).err().unwrap();
        assert!(e.to_string().contains("at most 1024 bytes"), "{e}");
    }

    #[test]
    fn memo_reference_to_undefined_key_is_an_error() {
        assert!(parse(b"\x80\x02h\x07.").is_err());
    }
}
