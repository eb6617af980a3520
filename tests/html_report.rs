//! The plan and graph pages in a real browser: `oar plan --format html` and `oar inspect
//! --format html` pages load in headless Chromium without console errors, have the SVG
//! elements they promise (one pipeline bar per stage × micro-batch × pass × chunk, one
//! device per rank, one node element per graph node, the rank graph's collectives
//! highlighted), load in under a second, and screenshot to a PNG. Skips, saying so, where
//! Chromium is missing (`scripts/setup.sh` installs Debian's `chromium`; `OAR_CHROMIUM`
//! names another binary).
//!
//! The Titan and PP-LCNet pages of the README (size and load time) are measured by the
//! ignored test: `cargo test --test html_report -- --ignored --nocapture`.

mod cli_util;
use cli_util::{fails, ok};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn chromium() -> Option<PathBuf> {
    let path = std::env::var_os("OAR_CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"));
    if path.is_file() {
        Some(path)
    } else {
        eprintln!(
            "skipping: no Chromium at {} (install Debian's `chromium` or set OAR_CHROMIUM)",
            path.display()
        );
        None
    }
}

/// Runs headless Chromium on `page` with `action` (`--dump-dom` or `--screenshot=…`), killed
/// after 90 s; (stdout, stderr).
fn run_chromium(bin: &Path, dir: &Path, page: &Path, action: &str) -> (String, String) {
    let profile = dir.join(format!("profile-{}", action.len()));
    let out = dir.join(format!("chromium-{}.out", action.len()));
    let err = dir.join(format!("chromium-{}.err", action.len()));
    let mut child = Command::new(bin)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
            "--window-size=1400,1800",
            "--enable-logging=stderr",
            "--v=0",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(action)
        .arg(format!("file://{}", page.display()))
        .stdout(Stdio::from(std::fs::File::create(&out).unwrap()))
        .stderr(Stdio::from(std::fs::File::create(&err).unwrap()))
        .spawn()
        .expect("start chromium");
    let start = Instant::now();
    loop {
        if child.try_wait().expect("wait for chromium").is_some() {
            break;
        }
        if start.elapsed() > Duration::from_secs(90) {
            let _ = child.kill();
            panic!(
                "chromium did not finish {action} on {} in 90 s",
                page.display()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    (
        std::fs::read_to_string(&out).unwrap_or_default(),
        std::fs::read_to_string(&err).unwrap_or_default(),
    )
}

/// What the browser made of a page: its DOM after the load event and its load time.
struct Loaded {
    dom: String,
    load_ms: u64,
}

/// Loads `page`, checks it ran without console errors and screenshots it.
fn load(bin: &Path, page: &Path) -> Loaded {
    let dir = page.with_extension("chromium");
    std::fs::create_dir_all(&dir).unwrap();
    let (dom, log) = run_chromium(bin, &dir, page, "--dump-dom");
    let errors: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("Uncaught") || l.contains(":CONSOLE(") || l.contains("SyntaxError"))
        .collect();
    assert!(
        errors.is_empty(),
        "{}: console errors:\n{}",
        page.display(),
        errors.join("\n")
    );
    assert!(
        dom.contains("</html>"),
        "{}: no DOM dumped:\n{log}",
        page.display()
    );
    let load_ms = dom
        .split("data-load-ms=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            panic!(
                "{}: the page's script did not run (no data-load-ms)",
                page.display()
            )
        });
    let png = dir.join("page.png");
    run_chromium(bin, &dir, page, &format!("--screenshot={}", png.display()));
    let bytes = std::fs::read(&png).unwrap_or_default();
    assert!(
        bytes.len() > 1000 && bytes.starts_with(b"\x89PNG"),
        "{}: no screenshot",
        page.display()
    );
    Loaded { dom, load_ms }
}

/// The load-time bound of the everyday tests: these pages load in 0.1-0.6 s, but CI shares
/// two cores with the build; the 1 s figure is checked by the ignored test below, on the
/// best of three loads.
const LOAD_BOUND_MS: u64 = 3000;

/// A copy of `page` with `script` run after the page's own load handlers; it leaves its
/// findings on `<body data-test>`, which the dumped DOM shows.
fn drive(bin: &Path, page: &Path, script: &str) -> String {
    let html = std::fs::read_to_string(page).unwrap();
    let driven = page.with_extension("driven.html");
    let hook = format!(
        "<script>window.addEventListener('load',function(){{var out=(function(){{{script}}})();document.body.setAttribute('data-test',out);}});</script></body>"
    );
    std::fs::write(&driven, html.replace("</body>", &hook)).unwrap();
    let dom = load(bin, &driven).dom;
    dom.split("data-test=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .unwrap_or_else(|| panic!("the driver script did not run on {}", page.display()))
        .to_string()
}

fn temp_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("oar-html-{}-{tag}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Node elements of the graph page's first view.
fn node_elements(dom: &str) -> usize {
    dom.matches("<g class=\"node ").count()
}

#[test]
fn plan_and_rank_pages_render_with_their_bars_devices_and_collectives() {
    let Some(bin) = chromium() else { return };
    let dir = temp_dir("plan");
    let graph = dir.join("g.oir");
    let page = dir.join("plan.html");
    let args = [
        "plan",
        "ernie-3.0-titan-tiny",
        "--cluster",
        "examples/clusters/cpu4.toml",
        "--dp",
        "1",
        "--tp",
        "2",
        "--pp",
        "2",
    ];
    let json: serde_json::Value =
        serde_json::from_str(&ok(&[&args[..], &["--format", "json"]].concat())).unwrap();
    let emit = graph.to_str().unwrap();
    let out = page.to_str().unwrap();
    ok(&[
        &args[..],
        &["--format", "html", "-o", out, "--emit-graph", emit],
    ]
    .concat());
    let loaded = load(&bin, &page);
    let n = |k: &str| json[k].as_u64().unwrap();
    let chunks = json["schedule"]
        .as_str()
        .and_then(|s| s.strip_prefix("Interleaved("))
        .and_then(|s| s.trim_end_matches(')').parse().ok())
        .unwrap_or(1u64);
    let bars = loaded.dom.matches("class=\"mb ").count() as u64;
    assert_eq!(
        bars,
        n("pp") * n("micro_batches") * 2 * chunks,
        "{}",
        json["schedule"]
    );
    assert_eq!(loaded.dom.matches("class=\"dev\"").count(), 4);
    for id in [
        "step-time",
        "memory",
        "pipeline",
        "mesh-section",
        "scaling",
        "alternatives",
    ] {
        assert!(loaded.dom.contains(&format!("id=\"{id}\"")), "no #{id}");
    }
    assert!(
        loaded.load_ms < LOAD_BOUND_MS,
        "plan page took {} ms",
        loaded.load_ms
    );
    // Sorting by step time orders the rows; hovering a device highlights its tensor group.
    let found = drive(
        &bin,
        &page,
        "var th=document.querySelectorAll('#alternatives th')[4];th.click();\
         var v=Array.prototype.map.call(document.querySelectorAll('#alternatives tbody tr'),function(r){return parseFloat(r.cells[4].dataset.v);});\
         var d=document.querySelector('svg.mesh rect.dev');d.dispatchEvent(new Event('mouseenter'));\
         return v.join(',')+'|'+document.querySelectorAll('svg.mesh rect.dev.hl').length;",
    );
    let (times, highlighted) = found.split_once('|').unwrap();
    let times: Vec<f64> = times.split(',').map(|t| t.parse().unwrap()).collect();
    assert!(
        times.len() > 1 && times.windows(2).all(|w| w[0] <= w[1]),
        "{times:?}"
    );
    assert_eq!(highlighted, n("tp").to_string());

    // Rank 0's graph: every collective and send/recv the partitioner inserted is highlighted.
    let text = ok(&["inspect", emit, "--rank", "0", "--sym", "N=4,seq=8"]);
    let header = text.lines().next().unwrap();
    let count = |word: &str| -> usize {
        header
            .split(", ")
            .chain(header.split(": "))
            .find_map(|p| {
                p.strip_suffix(word)
                    .and_then(|n| n.trim().rsplit(' ').next()?.parse().ok())
            })
            .unwrap_or_else(|| panic!("no `{word}` in {header}"))
    };
    let comms = count(" collectives") + count(" sends") + count(" recvs");
    assert!(comms > 0, "{header}");
    let rank_page = dir.join("rank0.html");
    ok(&[
        "inspect",
        emit,
        "--rank",
        "0",
        "--sym",
        "N=4,seq=8",
        "--format",
        "html",
        "-o",
        rank_page.to_str().unwrap(),
    ]);
    let loaded = load(&bin, &rank_page);
    let highlighted = loaded
        .dom
        .split("<g class=\"node ")
        .skip(1)
        .filter(|s| {
            s.split('"')
                .next()
                .is_some_and(|c| c.split(' ').any(|w| w == "collective"))
        })
        .count();
    assert_eq!(highlighted, comms, "{header}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn graph_page_has_one_element_per_node_and_a_view_per_pass() {
    let Some(bin) = chromium() else { return };
    let dir = temp_dir("graph");
    let page = dir.join("graph.html");
    ok(&[
        "inspect",
        "lcnet_x0_25",
        "--format",
        "html",
        "-o",
        page.to_str().unwrap(),
    ]);
    let stats: serde_json::Value = serde_json::from_str(&ok(&[
        "inspect",
        "lcnet_x0_25",
        "--stats",
        "--format",
        "json",
    ]))
    .unwrap();
    let nodes = stats["nodes"].as_u64().unwrap() as usize;
    let loaded = load(&bin, &page);
    assert_eq!(node_elements(&loaded.dom), nodes);
    assert!(loaded.dom.contains("id=\"v0n0\""));
    assert!(
        loaded.load_ms < LOAD_BOUND_MS,
        "graph page took {} ms",
        loaded.load_ms
    );
    // Search by op, the details of a hovered node, collapsing a layer.
    let found = drive(
        &bin,
        &page,
        "var q=document.getElementById('search');q.value='conv2d';q.dispatchEvent(new Event('input'));\
         var n=document.querySelector('svg.graph .node.fam-contraction');n.dispatchEvent(new Event('mouseenter'));\
         var c=document.querySelector('#groups input');c.checked=true;c.dispatchEvent(new Event('change'));\
         return [document.querySelectorAll('.node.match').length,document.getElementById('info-body').textContent.slice(0,40),\
           document.querySelectorAll('.node.hidden').length,document.querySelectorAll('.grp-box.shown').length].join('|');",
    );
    let parts: Vec<&str> = found.split('|').collect();
    let convs = loaded.dom.matches("data-op=\"conv2d\"").count();
    assert_eq!(parts[0], convs.to_string(), "{found}");
    assert!(parts[1].starts_with("conv2d %"), "{found}");
    assert!(parts[2].parse::<usize>().unwrap() > 1, "{found}");
    assert_eq!(parts[3], "1", "{found}");

    // With a pipeline: the input and each pass that changed the graph, as tabs.
    let page = dir.join("pipeline.html");
    ok(&[
        "inspect",
        "lcnet_x0_25",
        "--pipeline",
        "inference",
        "--format",
        "html",
        "-o",
        page.to_str().unwrap(),
    ]);
    let loaded = load(&bin, &page);
    let tabs = loaded.dom.matches("<button class=\"tab").count();
    assert!(tabs >= 2, "{tabs} views");
    assert!(loaded.dom.contains("data-view=\"view1\""));
    let _ = std::fs::remove_dir_all(&dir);
}

/// Without a browser: the page has one node element per node, and flags that make no page
/// are refused with a message.
#[test]
fn graph_page_without_a_browser() {
    let page = ok(&["inspect", "examples/mlp.oir", "--format", "html"]);
    let g = ok(&["inspect", "examples/mlp.oir", "--stats", "--format", "json"]);
    let nodes = serde_json::from_str::<serde_json::Value>(&g).unwrap()["nodes"]
        .as_u64()
        .unwrap() as usize;
    assert_eq!(node_elements(&page), nodes);
    assert!(
        page.starts_with("<!doctype html>") && !page.contains("<link") && !page.contains(" src=")
    );
    let err = fails(&["inspect", "examples/mlp.oir", "--stats", "--format", "html"]);
    assert!(err.contains("--stats prints text or json"), "{err}");
    let err = fails(&[
        "inspect",
        "examples/mlp.oir",
        "--rank",
        "0",
        "--format",
        "html",
    ]);
    assert!(err.contains("declares no process mesh"), "{err}");
}

/// The pages the README shows: under 2 MB each and loaded in under a second.
#[test]
#[ignore = "plans Titan on 1024 devices (~40 s in a debug build); run with --ignored"]
fn titan_plan_and_lcnet_graph_pages_are_small_and_fast() {
    let Some(bin) = chromium() else { return };
    let dir = temp_dir("big");
    let plan = dir.join("titan.html");
    let graph = dir.join("lcnet.html");
    ok(&[
        "plan",
        "ernie-3.0-titan",
        "--cluster",
        "a100",
        "--nodes",
        "128",
        "--format",
        "html",
        "-o",
        plan.to_str().unwrap(),
    ]);
    ok(&[
        "inspect",
        "lcnet_x1_0",
        "--format",
        "html",
        "-o",
        graph.to_str().unwrap(),
    ]);
    for page in [&plan, &graph] {
        let size = std::fs::metadata(page).unwrap().len();
        // The best of three: a shared machine's load only ever adds time.
        let times: Vec<u64> = (0..3).map(|_| load(&bin, page).load_ms).collect();
        let best = times.iter().copied().min().unwrap_or(u64::MAX);
        eprintln!("{}: {size} bytes, loaded in {times:?} ms", page.display());
        assert!(size < 2 << 20, "{}: {size} bytes", page.display());
        assert!(best < 1000, "{}: {best} ms", page.display());
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// The HeterPS placement page: one layer box per layer of the chain, coloured by its
/// stage's kind, and one cost bar per method that meets the target, in a real browser.
#[test]
fn heterps_page_renders_its_layers_and_method_bars() {
    let args = [
        "plan",
        "ctr-dnn",
        "--cluster",
        "examples/clusters/hetero.toml",
        "--throughput",
        "50000",
        "--rl-iterations",
        "10",
    ];
    let json: serde_json::Value =
        serde_json::from_str(&ok(&[&args[..], &["--format", "json"]].concat())).unwrap();
    let layers = json["layers"].as_array().unwrap().len();
    let bars = json["methods"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| !m["placement"].is_null())
        .count();
    let page_text = ok(&[&args[..], &["--format", "html"]].concat());
    assert_eq!(page_text.matches("<rect class=\"layer ").count(), layers);
    assert!(!page_text.contains("<link") && !page_text.contains(" src="));
    let Some(bin) = chromium() else { return };
    let dir = temp_dir("heterps");
    let page = dir.join("heterps.html");
    std::fs::write(&page, &page_text).unwrap();
    let loaded = load(&bin, &page);
    assert_eq!(loaded.dom.matches("<rect class=\"layer ").count(), layers);
    assert_eq!(loaded.dom.matches("class=\"method-bar\"").count(), bars);
    assert!(loaded.load_ms < LOAD_BOUND_MS, "{} ms", loaded.load_ms);
    let _ = std::fs::remove_dir_all(&dir);
}
