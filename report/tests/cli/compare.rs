use crate::common::{self, CellSpec};
use crate::{bin, p, stdout};

#[test]
fn compare_shows_base_current_and_change_per_cell_and_percentile() {
    let (base, cur) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut a = CellSpec::new("a", Some(100), "off");
    a.seconds = 5;
    let mut gone = CellSpec::new("gone", None, "off");
    gone.seconds = 2;
    let b_run = common::write_run(base.path(), "cmp", &[a.clone(), gone]);
    a.scale = 1.5;
    let mut new = CellSpec::new("new", None, "sync");
    new.seconds = 2;
    let c_run = common::write_run(cur.path(), "cmp", &[a, new]);

    let o = bin(&["compare", p(base.path()), p(cur.path()), "--markdown"]);
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    let md = stdout(&o);
    let (bp, cp) = (
        b_run.cells[0].latency.corrected.p99_us,
        c_run.cells[0].latency.corrected.p99_us,
    );
    let expected = format!(
        "| `a` | p99 | {} | {} | {} |",
        report::format::us(bp),
        report::format::us(cp),
        report::format::change(cp / bp - 1.0)
    );
    assert!(md.contains(&expected), "{expected}\n{md}");
    assert!(
        md.contains("| `a` | p50 |")
            && md.contains("| `a` | p99.9 |")
            && md.contains("| `a` | rate |")
    );
    assert!(md.contains("`gone`: only in base"), "{md}");
    assert!(md.contains("`new`: only in current"), "{md}");

    let o = bin(&["compare", p(base.path()), p(cur.path())]);
    let table = stdout(&o);
    assert!(
        table.contains("p99.9") && table.contains("cell gone: only in base"),
        "{table}"
    );
}
