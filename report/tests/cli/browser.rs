//! report.html in a real browser: headless Chromium with networking disabled opens a
//! copy of the report into which a small script is injected; the script measures every
//! chart and writes the sizes into the DOM, which Chromium dumps. Console output is
//! captured from Chromium's log: only the script's own marker may appear there.

use std::path::Path;
use std::process::Command;

use crate::small_matrix;

const CHROMIUM: &str = "/usr/bin/chromium";
const MARKER: &str = "meshbench-measure-done";

const MEASURE: &str = r#"<script>
(function () {
  var out = [];
  document.querySelectorAll('figure.chart').forEach(function (f) {
    var svg = f.querySelector('svg');
    var r = svg ? svg.getBoundingClientRect() : {width: 0, height: 0};
    var texts = svg ? svg.querySelectorAll('text') : [];
    var tw = 0;
    for (var i = 0; i < texts.length; i++) { tw = Math.max(tw, texts[i].getBBox().width); }
    out.push(f.dataset.chart + ' ' + Math.round(r.width) + ' ' + Math.round(r.height) + ' ' + texts.length + ' ' + Math.round(tw));
  });
  var pre = document.createElement('pre');
  pre.id = 'measurements';
  pre.textContent = out.join('\n');
  document.body.appendChild(pre);
  console.log('MARKER');
})();
</script>"#;

fn chromium_available() -> bool {
    if Path::new(CHROMIUM).exists() {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "{CHROMIUM} is missing and CI is set: the browser test must run in CI"
    );
    eprintln!("skipping the browser test: {CHROMIUM} is not installed (set CI to make this fail)");
    false
}

#[test]
fn every_chart_renders_with_a_size_and_the_console_stays_clean() {
    if !chromium_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    small_matrix(dir.path());
    let out = report::render(dir.path()).unwrap();
    let html = std::fs::read_to_string(&out.report_html).unwrap();
    let expected = html.matches("<figure class=\"chart\"").count();
    assert!(expected >= 10, "{expected} charts");
    let page = dir.path().join("measured.html");
    let script = MEASURE.replace("MARKER", MARKER);
    std::fs::write(&page, html.replace("</body>", &format!("{script}</body>"))).unwrap();
    let profile = tempfile::tempdir().unwrap();
    // bounded: coreutils timeout kills chromium after 60 s
    let o = Command::new("timeout")
        .args(["-k", "5", "60", CHROMIUM])
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--proxy-server=127.0.0.1:9",
            "--host-resolver-rules=MAP * ~NOTFOUND",
            "--enable-logging=stderr",
            "--v=0",
            "--window-size=1280,2400",
            "--dump-dom",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(format!("file://{}", page.display()))
        .output()
        .expect("start chromium");
    let dom = String::from_utf8_lossy(&o.stdout);
    let log = String::from_utf8_lossy(&o.stderr);
    assert!(
        o.status.success(),
        "chromium failed or timed out: {:?}\n{log}",
        o.status
    );
    let start = dom
        .find("<pre id=\"measurements\">")
        .expect("the script ran")
        + 23;
    let end = start + dom[start..].find("</pre>").unwrap();
    let rows: Vec<&str> = dom[start..end].lines().collect();
    assert_eq!(rows.len(), expected, "{rows:?}");
    for row in rows {
        let f: Vec<&str> = row.split(' ').collect();
        let num = |i: usize| f[i].parse::<f64>().unwrap();
        assert!(num(1) > 300.0 && num(2) > 150.0, "chart too small: {row}");
        assert!(num(3) >= 5.0, "chart has too few text elements: {row}");
        assert!(
            num(4) > 20.0,
            "chart text has no width (font missing?): {row}"
        );
    }
    // the console: our own marker was captured (so capture works) and nothing else
    let console: Vec<&str> = log.lines().filter(|l| l.contains("CONSOLE")).collect();
    assert!(
        console.iter().any(|l| l.contains(MARKER)),
        "console not captured:\n{log}"
    );
    let others: Vec<&&str> = console.iter().filter(|l| !l.contains(MARKER)).collect();
    assert!(others.is_empty(), "console messages: {others:?}");
    for bad in ["net::ERR_", "Failed to load resource"] {
        assert!(!log.contains(bad), "chromium log mentions {bad}:\n{log}");
    }
}
