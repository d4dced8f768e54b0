//! Reading the file: what is not TOML, and which key and line each wrong type, unknown key or
//! missing key is reported at.

use super::tests::{error, parse, with_bdev, with_subsystem};
use super::*;

#[test]
fn syntax_errors_name_line_and_column() {
    let e = error("[global]\nreactor_mask = \"0x1\" junk\n", 2, None);
    assert!(e.contains("TOML syntax error at column 22"), "{e}");
    let e = error("[global]\n[global]\n", 2, None);
    assert!(e.contains("duplicate key"), "{e}");
}

#[test]
fn type_errors_name_the_key() {
    let e = error(
        &with_bdev("").replace("512", "\"512\""),
        5,
        Some("block_size"),
    );
    assert!(e.contains("expected an integer"), "{e}");
    let e = error(
        &with_subsystem("hosts = [\n  \"nqn.2016-06.io.spdk:h1\",\n  7,\n]\n"),
        11,
        Some("hosts"),
    );
    assert!(
        e.contains("expected a string, found the integer 7 (element 2); write it in double quotes"),
        "{e}"
    );
    let e = error(
        &with_subsystem("allow_any_host = \"yes\"\n"),
        9,
        Some("allow_any_host"),
    );
    assert!(e.contains("expected a boolean"), "{e}");
    let e = error("[bdev]\nname = \"x\"\n", 1, Some("bdev"));
    assert!(
        e.contains("write [[bdev]] (a list of tables), not [bdev]"),
        "{e}"
    );
}

#[test]
fn unknown_and_missing_keys() {
    let e = error(&with_bdev("blocksize = 512\n"), 6, Some("blocksize"));
    assert!(
        e.contains("unknown key in [[bdev]] (did you mean `block_size`?); valid keys here:"),
        "{e}"
    );
    let e = error("[global]\nmask = \"0x1\"\n", 2, Some("mask"));
    assert!(e.contains("`reactor_mask`"), "{e}");
    let e = error("\n[globl]\n", 2, Some("globl"));
    assert!(
        e.contains("unknown key at the top level; valid keys here: `global`, `transport`"),
        "{e}"
    );
    let e = error(
        "\n[[bdev]]\nname = \"M\"\nkind = \"null\"\nblock_size = 512\n",
        3,
        Some("num_blocks"),
    );
    assert!(e.contains("a null bdev needs num_blocks"), "{e}");
    let e = error(
        "[[subsystem]]\nnqn = \"nqn.2016-06.io.spdk:c\"\n[[subsystem.namespace]]\nnsid = 1\n",
        3,
        Some("bdev"),
    );
    assert!(
        e.ends_with(
            "is required in each [[subsystem.namespace]] and missing from this one; add it, \
             e.g. bdev = \"Malloc0\""
        ),
        "{e}"
    );
}

#[test]
fn dotted_keys_work_like_sections() {
    let c = parse("transport.max_queue_depth = 64\nglobal.reactor_mask = \"0x1\"\n").unwrap();
    assert_eq!(c.transport.options.max_queue_depth, 64);
    error(
        "\ntransport.max_queue_depth = 5000\n",
        2,
        Some("max_queue_depth"),
    );
}

#[test]
fn empty_file_is_valid_with_defaults() {
    let c = parse("").unwrap();
    assert_eq!(c.reactor_mask.to_string(), DEFAULT_REACTOR_MASK);
    assert_eq!(c.mask_origin, MaskOrigin::Default);
    assert!(c.bdevs.is_empty() && c.subsystems.is_empty());
    assert!(c.warnings()[0].contains("no [[subsystem]]"));
}

#[test]
fn non_utf8_file_names_the_line() {
    let path = std::env::temp_dir().join(format!("nvmf-tgt-utf8-{}.toml", std::process::id()));
    std::fs::write(&path, b"[global]\n# caf\xe9\n").unwrap();
    let e = Config::load(&path).unwrap_err();
    let _ = std::fs::remove_file(&path);
    assert_eq!(e.line(), Some(2), "{e}");
    assert!(
        e.to_string().contains("byte 6 of the line is not UTF-8"),
        "{e}"
    );
}

#[test]
fn missing_file_names_the_path() {
    let e = Config::load(Path::new("/nonexistent/nvmf.toml")).unwrap_err();
    let shown = e.to_string();
    assert!(
        shown.starts_with("config /nonexistent/nvmf.toml: cannot read it:"),
        "{shown}"
    );
    assert!(shown.contains("-c"), "{shown}");
}

#[test]
fn positions() {
    assert_eq!(line_of("a\nb\nc", 0), 1);
    assert_eq!(line_of("a\nb\nc", 2), 2);
    assert_eq!(line_of("a\nb\nc", 999), 3);
    assert_eq!(column_of("ab\ncd", 4), 2);
}

#[test]
fn wrong_type_deep_in_the_second_subsystem() {
    // Lines 9-11 and 14-18; nsid is also set (rightly) in the first subsystem.
    let text = format!(
        "{}[[subsystem]]\nnqn = \"nqn.2016-06.io.spdk:cnode2\"\n\
         [[subsystem.namespace]]\nbdev = \"Malloc0\"\n\
         [[subsystem.namespace]]\nbdev = \"Malloc0\"\nnsid = \"2\"\n",
        with_subsystem("[[subsystem.namespace]]\nbdev = \"Malloc0\"\nnsid = 1\n")
    );
    let e = error(&text, 18, Some("nsid"));
    assert!(
        e.ends_with(
            "expected an integer, found the string \"2\"; write a whole number, without quotes"
        ),
        "{e}"
    );
}

#[test]
fn unknown_key_in_an_inline_table() {
    let text = with_subsystem(
        "listener = [\n  { trtype = \"loopback\", traddr = \"a\" },\n  \
         { trtype = \"loopback\", traddr = \"b\", port = \"4420\" },\n]\n",
    );
    let e = error(&text, 11, Some("port"));
    assert!(
        e.contains(
            "unknown key in [[subsystem.listener]]; valid keys here: `trtype`, `traddr`, `trsvcid`"
        ),
        "{e}"
    );
    let e = error(
        "\nglobal = { reactor_mask = \"0x1\", idle_sleep = 5 }\n",
        2,
        Some("idle_sleep"),
    );
    assert!(e.contains("unknown key in [global]"), "{e}");
}

#[test]
fn missing_key_in_the_third_entry() {
    let bdev = |name: &str| {
        format!("[[bdev]]\nname = \"{name}\"\nkind = \"null\"\nnum_blocks = 1\nblock_size = 512\n")
    };
    // The third [[bdev]] starts at line 11 and has no kind.
    let text = format!(
        "{}{}[[bdev]]\nname = \"C\"\nnum_blocks = 1\nblock_size = 512\n",
        bdev("A"),
        bdev("B")
    );
    let e = error(&text, 11, Some("kind"));
    assert!(
        e.ends_with(
            "is required in each [[bdev]] and missing from this one; add it, e.g. \
             kind = \"malloc\""
        ),
        "{e}"
    );
    // An inline entry is blamed at its own line.
    let e = error(
        &with_subsystem("namespace = [\n  { bdev = \"Malloc0\" },\n  { nsid = 2 },\n]\n"),
        11,
        Some("bdev"),
    );
    assert!(
        e.contains("is required in each [[subsystem.namespace]]"),
        "{e}"
    );
}

#[test]
fn key_named_like_one_earlier_in_another_table() {
    // traddr is set, rightly, in the [[bdev]] first; the listener's is the wrong one.
    let nvme = "[[bdev]]\nname = \"Nvme0\"\nkind = \"nvme\"\ntraddr = \"04:00.0\"\n\
                [[subsystem]]\nnqn = \"nqn.2016-06.io.spdk:c\"\n";
    let e = error(
        &format!("{nvme}listener = [{{ trtype = \"loopback\", traddr = 5 }}]\n"),
        7,
        Some("traddr"),
    );
    assert!(e.contains("expected a string, found the integer 5"), "{e}");
    // bdev names both the top-level list and a namespace's key.
    let e = error(
        &format!("{nvme}[[subsystem.namespace]]\nbdev = [\"Nvme0n1\"]\n"),
        8,
        Some("bdev"),
    );
    assert!(e.contains("expected a string, found an array"), "{e}");
}

#[test]
fn tables_of_the_wrong_shape() {
    let e = error("[[global]]\n", 1, Some("global"));
    assert!(e.contains("write [global], not [[global]]"), "{e}");
    let e = error("transport = 5\n", 1, Some("transport"));
    assert!(e.contains("expected a table, found the integer 5"), "{e}");
    let e = error("bdev = [\n  1,\n]\n", 2, Some("bdev"));
    assert!(e.contains("found the integer 1 (element 1)"), "{e}");
    let e = error(
        &with_subsystem("hosts = \"nqn.2016-06.io.spdk:h\"\n"),
        9,
        Some("hosts"),
    );
    assert!(e.contains("expected an array of strings"), "{e}");
    let e = error(
        &with_subsystem("[subsystem.listener]\ntrtype = \"loopback\"\n"),
        9,
        Some("listener"),
    );
    assert!(
        e.contains("write [[subsystem.listener]] (a list of tables), not [subsystem.listener]"),
        "{e}"
    );
}

#[test]
fn inline_tables_work_like_headers() {
    let headers = parse(&with_subsystem(
        "allow_any_host = true\n[[subsystem.listener]]\ntrtype = \"loopback\"\ntraddr = \"a\"\n\
         [[subsystem.namespace]]\nbdev = \"Malloc0\"\n",
    ))
    .unwrap();
    let inline = parse(
        "global = { reactor_mask = \"0x1\" }\n\
         bdev = [{ name = \"Malloc0\", kind = \"malloc\", num_blocks = 16, block_size = 512 }]\n\
         subsystem = [{ nqn = \"nqn.2016-06.io.spdk:cnode1\", allow_any_host = true, \
         listener = [{ trtype = \"loopback\", traddr = \"a\" }], namespace = [{ bdev = \"Malloc0\" }] }]\n",
    )
    .unwrap();
    assert_eq!(inline.bdevs, headers.bdevs);
    assert_eq!(
        inline.subsystems[0].listeners,
        headers.subsystems[0].listeners
    );
    assert_eq!(inline.subsystems[0].namespaces[0].nsid, 1);
    assert_eq!(inline.subsystems[0].line, 3);
}

#[test]
fn every_listed_key_is_read() {
    // No key takes a date: each must refuse one, or its value would be silently dropped.
    let sub = "[[subsystem]]\nnqn = \"nqn.2016-06.io.spdk:c\"\n";
    let tables: [(String, &[&str], &str); 7] = [
        (String::new(), FILE_KEYS, ""),
        ("[global]\n".into(), GLOBAL_KEYS, ""),
        ("[transport]\n".into(), TRANSPORT_KEYS, ""),
        (
            "[[bdev]]\n".into(),
            BDEV_KEYS,
            "name = \"B\"\nkind = \"null\"\n",
        ),
        (
            "[[subsystem]]\n".into(),
            SUBSYSTEM_KEYS,
            "nqn = \"nqn.2016-06.io.spdk:c\"\n",
        ),
        (
            format!("{sub}[[subsystem.listener]]\n"),
            LISTENER_KEYS,
            "trtype = \"loopback\"\ntraddr = \"a\"\n",
        ),
        (
            format!("{sub}[[subsystem.namespace]]\n"),
            NAMESPACE_KEYS,
            "bdev = \"B\"\n",
        ),
    ];
    for (header, keys, required) in tables {
        for key in keys {
            let others: String = required
                .lines()
                .filter(|l| !l.starts_with(&format!("{key} ")))
                .map(|l| format!("{l}\n"))
                .collect();
            let text = format!("{header}{key} = 1979-05-27\n{others}");
            let e = error(&text, header.lines().count() + 1, Some(key));
            assert!(e.contains("found the datetime 1979-05-27"), "{e}");
        }
    }
}
