"""`normbench summary --by` and `normbench report`: the aggregate table over seeds, and the HTML page opened in a
real headless Chromium (Debian's `chromium`, driven through its DevTools protocol over a pipe)."""

from __future__ import annotations

import base64
import fcntl
import io
import json
import os
import select
import shutil
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml
from PIL import Image
from typer.testing import CliRunner

import normbench
from normbench import sweep
from normbench.cli import app
from normbench.views.summary import GroupKeyError, resolve_keys

runner = CliRunner()

# Digits (classification, with a test split); lr 1e38 makes every run diverge at step 1; one run is made
# to fail. A description with markup checks the page's escaping.
CONFIG = {
    "name": "mixed",
    "description": 'Escaped? <script>alert("x")</script> & <b>bold</b>',
    "seeds": [1, 2],
    "data": {"name": "digits", "n": 120, "n_test": 60},
    "model": {"depth": 2, "width": 8, "activation": "tanh", "weight_init": {"name": "normal", "std": 0.3}},
    "train": {"optimizer": "sgd", "lr": 0.05, "steps": 6},
    "record": {"loss_every": 2, "hist_every": 3, "bins": 10},
    "grid": {"model.norm": ["none", "batch"], "train.lr": [0.05, 1.0e38]},
}
REGRESSION = {
    "name": "regression",
    "seeds": [1],
    "data": {"name": "quadratic", "n": 64, "n_test": 0, "noise": 1.0},
    "model": {"depth": 2, "width": 8, "weight_init": {"name": "normal", "std": 0.5}},
    "train": {"optimizer": "sgd", "lr": 0.001, "steps": 4},
    "record": {"loss_every": 2, "hist_every": 2, "bins": 10},
    "grid": {"model.norm": ["none", "batch"]},
}


def invoke(*args: str):
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("results")
    real = sweep.train_stack

    def failing_one(cfgs, *args, **kw):
        if any(c.model.norm == "batch" and c.train.lr == 0.05 and c.seed == 2 for c in cfgs):
            raise RuntimeError("a <deliberate> failure")
        return real(cfgs, *args, **kw)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(sweep, "train_stack", failing_one)
        for raw in (CONFIG, REGRESSION):
            path = out / f"{raw['name']}.yaml"
            path.write_text(yaml.safe_dump(raw))
            runner.invoke(app, ["run", str(path), "--out", str(out)])  # exit 1: one run failed
    runs = pd.read_parquet(out / "mixed" / "runs.parquet")
    assert sorted(runs.status.value_counts().items()) == [("diverged", 4), ("failed", 1), ("ok", 3)]
    return out


def test_summary_by_aggregates_ok_runs_and_counts_the_others(results):
    per_run = json.loads(invoke("summary", results / "mixed", "--format", "json").stdout)
    groups = json.loads(invoke("summary", results / "mixed", "--by", "norm", "--by", "lr", "--format", "json").stdout)
    assert [(g["model.norm"], g["train.lr"]) for g in groups] == [
        ("none", 0.05),
        ("none", 1e38),
        ("batch", 0.05),
        ("batch", 1e38),
    ]
    for g in groups:
        mine = [r for r in per_run if (r["model.norm"], r["train.lr"]) == (g["model.norm"], g["train.lr"])]
        ok = [r for r in mine if r["status"] == "ok"]
        assert g["runs"] == len(mine) == 2
        assert (g["ok"], g["diverged"], g["failed"], g["missing"]) == tuple(
            sum(r["status"] == s for r in mine) for s in ("ok", "diverged", "failed", "missing")
        )
        assert g["diverged_steps"] == sorted(r["diverged_step"] for r in mine if r["status"] == "diverged")
        for metric in ("final_train_loss", "final_test_loss", "final_train_accuracy", "final_test_accuracy"):
            values = [r[metric] for r in ok if r[metric] is not None]
            assert g[f"{metric}.n"] == len(values)
            if values:  # the mean of the ok runs only: diverged and failed runs never enter it
                assert g[f"{metric}.mean"] == pytest.approx(sum(values) / len(values))
                assert (g[f"{metric}.min"], g[f"{metric}.max"]) == (min(values), max(values))
            else:
                assert g[f"{metric}.mean"] is None
        dead = [sum(r["dead_fraction"]) / len(r["dead_fraction"]) for r in ok]
        assert g["dead_fraction.mean"] == (pytest.approx(sum(dead) / len(dead)) if dead else None)
        assert "final_test_loss_train_mode.mean" in g
    # One ok run: its std is not defined.
    batch = groups[2]
    assert (batch["ok"], batch["failed"]) == (1, 1) and batch["final_train_loss.std"] is None
    assert groups[0]["final_train_loss.std"] == pytest.approx(
        pd.Series([r["final_train_loss"] for r in per_run if r["run_id"] in _ids(per_run, "none", 0.05)]).std()
    )
    # The test loss with batch statistics: each ok run's last test-split row in train mode of curves.parquet.
    last = []
    for rid in _ids(per_run, "none", 0.05):
        curves = pd.read_parquet(results / "mixed" / "runs" / rid / "curves.parquet")
        test = curves[(curves.split == "test") & (curves["mode"] == "train")].sort_values("step")
        last.append(test.loss.iloc[-1])
    assert groups[0]["final_test_loss_train_mode.mean"] == pytest.approx(sum(last) / len(last))


def _ids(records: list[dict], norm: str, lr: float) -> list[str]:
    return [r["run_id"] for r in records if (r["model.norm"], r["train.lr"]) == (norm, lr)]


def test_summary_by_markdown_is_rendered_from_the_json_and_metric_selects_columns(results):
    from normbench.views.summary import aggregate_markdown

    args = ("summary", results / "mixed", "--by", "norm,lr", "--metric", "final_test_accuracy")
    records = json.loads(invoke(*args, "--metric", "final_train_loss", "--format", "json").stdout)
    assert {k.rsplit(".", 1)[0] for k in records[0] if k.endswith(".median")} == {
        "final_test_accuracy",
        "final_train_loss",
    }
    md = invoke(*args, "--metric", "final_train_loss", "--format", "markdown").stdout
    assert md == aggregate_markdown(records)  # a document's table renders again from the JSON it came from
    lines = md.splitlines()
    assert lines[0] == "| norm | lr | runs | train loss | test acc running stats |" and len(lines) == 2 + len(records)
    row = next(r for r in records if r["ok"] > 1)
    cell = f"{row['final_test_accuracy.median']:.3f} ({row['final_test_accuracy.min']:.3f}-"
    assert any(cell in line for line in lines)
    # Two keys and one metric: a grid, norm down and lr across, with the runs that are not ok said in their cell.
    grid = invoke(*args, "--format", "markdown").stdout.splitlines()
    lrs = list(dict.fromkeys(str(r["train.lr"]) for r in records))
    assert grid[0] == "| norm \\ lr | " + " | ".join(lrs) + " |" and len(grid) == 2 + len(
        {r["model.norm"] for r in records}
    )
    assert any(cell in line for line in grid) and any("failed" in line or "diverged" in line for line in grid)
    for bad, message in (
        (["--format", "markdown"], "--format markdown needs --by"),
        (["--metric", "final_test_accuracy"], "--metric needs --by"),
        (["--by", "norm", "--metric", "loss"], "--metric 'loss': not a final number"),
    ):
        result = runner.invoke(app, ["summary", str(results / "mixed"), *bad])
        assert result.exit_code == 2 and message in result.output and "Traceback" not in result.output


def test_summary_by_table_csv_and_keys(results):
    table = invoke("summary", results, "--by", "model.norm").stdout
    for text in ("mixed", "regression", "train acc", "running stats", "1 failed", "2 diverged (step"):
        assert text in table
    csv = pd.read_csv(io.StringIO(invoke("summary", results / "mixed", "--by", "norm,lr", "--format", "csv").stdout))
    assert len(csv) == 4 and {"final_test_accuracy.mean", "diverged_steps", "failed"} <= set(csv.columns)
    regression = json.loads(invoke("summary", results / "regression", "--by", "norm", "--format", "json").stdout)
    assert "final_train_accuracy.mean" not in regression[0] and "final_test_loss.mean" not in regression[0]

    # Without --by: one row per run, with accuracy columns for classification only.
    assert "train acc" in invoke("summary", results / "mixed").stdout
    assert "train acc" not in invoke("summary", results / "regression").stdout

    for args, message in (
        (["--by", "depth"], "grid keys: model.norm, train.lr, seed"),
        (["--by", "norm", "--by", "nothing"], "is not a grid key"),
    ):
        result = runner.invoke(app, ["summary", str(results / "mixed"), *args])
        assert result.exit_code == 2 and "Traceback" not in result.output and message in result.output
    # A folder: a key of one experiment groups that one; the other is grouped by the keys it has.
    result = runner.invoke(app, ["summary", str(results), "--by", "lr", "--format", "json"])
    assert result.exit_code == 0 and "regression: grouped by nothing" in result.output
    result = runner.invoke(app, ["summary", str(results), "--by", "width"])
    assert result.exit_code == 2 and "not a grid key of any experiment" in result.output


def test_ambiguous_short_key(tmp_path):
    (tmp_path / "config.yaml").write_text(yaml.safe_dump({"grid": {"a.std": [1, 2], "b.std": [1, 2]}, "seeds": [1]}))
    assert resolve_keys(tmp_path, ["a.std", "seed", "a.std"]) == ["a.std", "seed"]
    with pytest.raises(GroupKeyError, match=r"matches several grid keys of .*: a\.std, b\.std"):
        resolve_keys(tmp_path, ["std"])


@pytest.fixture(scope="module")
def page(results) -> Path:
    """The report of the results folder (both experiments), at its default place."""
    invoke("report", results)
    return results / "report.html"


def test_report_page(results, page, tmp_path):
    text = page.read_text()
    assert 'id="exp-mixed"' in text and 'id="exp-regression"' in text  # one section per experiment
    pngs = sorted(results.glob("*/figures/*.png"))
    assert pngs and text.count('<img src="data:image/png;base64,') == len(pngs)
    assert "<script" not in text and "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &lt;b&gt;" in text
    assert "a &lt;deliberate&gt; failure" in text and "diverged at" in text
    for needle in ("numpy", "torch", "python", "written-out, cpu", "train.lr", "test acc", "norm_momentum: 0.1"):
        assert needle in text
    assert "http://" not in text.replace("http://www.w3.org", "") and "https://" not in text

    # Figures newer than the results are reused, not drawn again; one experiment goes to its own folder.
    stamps = {p: p.stat().st_mtime_ns for p in pngs}
    invoke("report", results / "mixed")
    assert {p: p.stat().st_mtime_ns for p in pngs} == stamps
    one = (results / "mixed" / "report.html").read_text()
    assert "<h1>normbench report: mixed</h1>" in one and "exp-regression" not in one

    result = runner.invoke(app, ["report", str(results), "--out", str(tmp_path)])
    assert result.exit_code == 2 and "is a folder" in result.output


def test_report_names_no_path_of_the_machine_and_notes_only_columns_it_has(results, page):
    """A page to send: the results folder by its name only (not where it lies), and a config's or traceback's
    path cut to the file name; the notes under the tables speak of the columns the table has."""
    text = page.read_text()
    assert str(results.resolve()) not in text and str(results) not in text
    assert str(Path(normbench.__file__).resolve().parent) not in text  # tracebacks, the configs' `resolved from`
    regression = text[text.index('id="exp-regression"') :]
    assert "accuracy" not in regression.split("<h3>Figures</h3>")[0].split("Final numbers over seeds")[1]
    assert "dropout on" not in text  # no run trains with dropout


# -- the page in a real browser -------------------------------------------------------------------------------


class Chromium:
    """Headless Chromium driven through the DevTools protocol on a pipe (--remote-debugging-pipe: JSON messages
    ending in NUL on file descriptors 3 and 4), so no port and no websocket package are needed."""

    def __init__(self, profile: Path):
        exe = shutil.which("chromium")
        assert exe
        self._cmd_r, self._cmd_w = os.pipe()
        self._out_r, self._out_w = os.pipe()
        # The background-networking flags: nothing tries the network (closed on CI machines).
        args = [
            exe,
            "--headless",
            "--no-sandbox",  # as root
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-extensions",
            "--no-first-run",
            "--hide-scrollbars",
            f"--user-data-dir={profile}",
            "--remote-debugging-pipe",
            "about:blank",
        ]
        cmd_r, out_w = self._cmd_r, self._out_w

        def wire() -> None:  # in the child: our pipe ends become its fds 3 (commands in) and 4 (replies out)
            high = [fcntl.fcntl(fd, fcntl.F_DUPFD, 10) for fd in (cmd_r, out_w)]
            os.dup2(high[0], 3)
            os.dup2(high[1], 4)

        self.proc = subprocess.Popen(
            args, pass_fds=(3, 4), preexec_fn=wire, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        os.close(cmd_r)
        os.close(out_w)
        self._buf = b""
        self._id = 0
        self.events: list[dict] = []
        try:
            target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
            self.session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
            for domain in ("Page", "Runtime", "Log"):
                self.send(f"{domain}.enable", session=self.session)
        except BaseException:
            self.close()
            raise

    def send(self, method: str, params: dict | None = None, session: str | None = None) -> dict:
        self._id += 1
        msg = {"id": self._id, "method": method, "params": params or {}} | ({"sessionId": session} if session else {})
        os.write(self._cmd_w, json.dumps(msg).encode() + b"\0")
        reply = self._wait(lambda m, i=self._id: m.get("id") == i)
        assert "error" not in reply, (method, reply["error"])
        return reply["result"]

    def _wait(self, match, timeout: float = 30.0) -> dict:
        end = time.monotonic() + timeout
        while True:
            while b"\0" in self._buf:
                raw, self._buf = self._buf.split(b"\0", 1)
                msg = json.loads(raw)
                if "method" in msg:
                    self.events.append(msg)
                if match(msg):
                    return msg
            ready, _, _ = select.select([self._out_r], [], [], max(0.0, end - time.monotonic()))
            assert ready, "chromium did not answer within 30 s"
            chunk = os.read(self._out_r, 1 << 20)
            assert chunk, "chromium exited"
            self._buf += chunk

    def open(self, url: str, width: int = 1000, height: int = 900) -> list[str]:
        """Load `url`; the errors it logged (console errors, uncaught exceptions, failed loads)."""
        s = self.session
        self.send(
            "Emulation.setDeviceMetricsOverride",
            {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False},
            s,
        )
        self.events.clear()
        self.send("Page.navigate", {"url": url}, s)
        self._wait(lambda m: m.get("method") == "Page.loadEventFired" and m.get("sessionId") == s)
        errors = []
        for e in self.events:
            p = e.get("params", {})
            if e["method"] == "Runtime.exceptionThrown":
                errors.append(p["exceptionDetails"].get("text", "exception"))
            elif e["method"] == "Runtime.consoleAPICalled" and p["type"] in ("error", "assert"):
                errors.append(str(p["args"]))
            elif e["method"] == "Log.entryAdded" and p["entry"]["level"] == "error":
                errors.append(p["entry"]["text"])
        return errors

    def evaluate(self, expression: str):
        return self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True}, self.session)[
            "result"
        ].get("value")

    def screenshot(self, full_page: bool = False) -> Image.Image:
        params: dict = {"format": "png"}
        if full_page:
            height = self.evaluate("document.documentElement.scrollHeight")
            width = self.evaluate("document.documentElement.clientWidth")
            params |= {
                "captureBeyondViewport": True,
                "clip": {"x": 0, "y": 0, "width": width, "height": height, "scale": 1},
            }
        data = self.send("Page.captureScreenshot", params, self.session)["data"]
        return Image.open(io.BytesIO(base64.b64decode(data))).convert("RGB")

    def close(self) -> None:
        try:
            self.send("Browser.close")
            self.proc.wait(timeout=10)
        except (AssertionError, OSError, subprocess.TimeoutExpired):
            self.proc.kill()
            self.proc.wait()
        finally:
            os.close(self._cmd_w)
            os.close(self._out_r)


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    if shutil.which("chromium") is None:
        pytest.skip("chromium is not installed (`apt-get install chromium`; .ci/run installs it)")
    b = Chromium(tmp_path_factory.mktemp("chromium-profile"))
    yield b
    b.close()


IMAGES = "Array.from(document.images).map(i => [i.complete, i.naturalWidth, i.alt])"


def test_report_in_headless_chromium(page, browser, tmp_path):
    errors = browser.open(page.as_uri())
    assert errors == []
    images = browser.evaluate(IMAGES)
    assert len(images) == page.read_text().count("<img ")
    assert images and all(complete and width > 0 and alt for complete, width, alt in images), images
    # The figures fit a ~900 px reading width: nothing wider than the window.
    assert browser.evaluate("document.documentElement.scrollWidth") <= 1000
    shot = browser.screenshot()
    colours = shot.getcolors(maxcolors=1 << 16)
    assert colours is None or len(colours) > 20, "the screenshot is blank"

    # The checks see what they look for: a broken image and a console error are caught.
    bad = tmp_path / "bad.html"
    bad.write_text(
        '<!DOCTYPE html><html><head><link rel="icon" href="data:,"></head><body>'
        '<img src="data:image/png;base64,AAAA" alt="broken"><script>console.error("seen")</script></body></html>'
    )
    errors = browser.open(bad.as_uri())
    assert any("seen" in e for e in errors)
    assert browser.evaluate(IMAGES)[0][1] == 0


def test_images_decode_inside_folded_sections(page, browser, tmp_path):
    """Figures in closed <details> still decode (many groups fold away)."""
    folded = tmp_path / "folded.html"
    folded.write_text(page.read_text().replace("<details open>", "<details>"))
    assert browser.open(folded.as_uri()) == []
    images = browser.evaluate(IMAGES)
    assert images and all(width > 0 for _, width, _ in images)


def test_summary_by_shows_the_precise_statistics_loss_where_recorded(tmp_path, tiny_raw):
    from rich.console import Console

    from normbench.config import experiment_from_dict
    from normbench.results import load_table
    from normbench.sweep import run_experiment
    from normbench.views.summary import aggregate_runs, fmt_stats

    tiny_raw["record"]["precise_bn"] = True
    exp = experiment_from_dict(tiny_raw)
    run_experiment(exp, tmp_path, console=Console(quiet=True))
    exp_dir = tmp_path / exp.name
    groups = aggregate_runs(exp_dir, ["model.norm"]).set_index("model.norm")
    curves = load_table(exp_dir, "curves")
    precise = curves[(curves.split == "test") & (curves["mode"] == "precise")]
    assert groups.loc["batch", "final_test_loss_precise.mean"] == pytest.approx(precise.loss.mean())
    assert groups.loc["none", "final_test_loss_precise.n"] == 0
    assert fmt_stats(groups.loc["none"], "final_test_loss_precise") == ("-", "")  # not defined without running stats


def test_a_grid_over_a_list_valued_key_reads_back(tmp_path, tiny_raw):
    """Parquet gives list values back as arrays: summary, --where, plot and report take them as one value each."""
    tiny_raw["seeds"] = [1]
    tiny_raw["train"]["steps"] = 4
    tiny_raw["grid"] = {"model.norm": ["noisy_batch"], "model.norm_noise": [[0.0, 1.0], [1.0, 3.0]]}
    cfg = tmp_path / "lists.yaml"
    cfg.write_text(yaml.safe_dump(tiny_raw))
    out = tmp_path / "out"
    assert runner.invoke(app, ["run", str(cfg), "--out", str(out)]).exit_code == 0
    exp = out / tiny_raw["name"]
    for args in (["summary", str(exp)], ["summary", str(exp), "--by", "norm_noise"]):
        result = runner.invoke(app, args)
        assert result.exit_code == 0 and "[1.0, 3.0]" in result.output, result.output
    result = runner.invoke(app, ["summary", str(exp), "--format", "json"])
    assert result.exit_code == 0 and [1.0, 3.0] in [r["model.norm_noise"] for r in json.loads(result.output)]
    picked = runner.invoke(app, ["summary", str(exp), "--where", "norm_noise=[1, 3]", "--format", "json"])
    assert picked.exit_code == 0 and [r["model.norm_noise"] for r in json.loads(picked.output)] == [[1.0, 3.0]]
    missing = runner.invoke(app, ["summary", str(exp), "--where", "norm_noise=[1, 4]"])
    assert missing.exit_code == 2 and "[0.0, 1.0], [1.0, 3.0]" in missing.output
    for args in (["plot", str(exp)], ["plot", str(exp), "--compare", "norm_noise"], ["report", str(exp)]):
        result = runner.invoke(app, args)
        assert result.exit_code == 0, result.output
    # File names and labels show a list value as the user wrote it, never as a Python tuple.
    names = [p.name for p in (exp / "figures").iterdir()]
    assert "dist_norm_noise-1.0,3.0.png" in names and not any("(" in n or " " in n for n in names)
    page = (exp / "report.html").read_text()
    assert "model.norm_noise = [1.0, 3.0]" in page and "(1.0, 3.0)" not in page
