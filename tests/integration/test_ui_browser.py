"""Airflow 3's UI in a real browser: what a data engineer sees of the churn DAG.

`scripts/ui.py` (what `make ui` runs) starts the api-server, scheduler, dag-processor and triggerer on a
temporary Airflow home (SQLite, LocalExecutor) with the churn DAG reading and writing a moto S3 server,
next to `airflow-bt local-sagemaker` (tests/sagemaker_stack.py). Playwright drives Debian's chromium
through the UI as a user would: log in with the printed login, open the DAG, read its schedule and docs,
trigger June 24 from the form with ``instance_count`` 2 (local backend) and June 23 with backend
``sagemaker``, wait for both to succeed, read the local run's transform log (two instances, records/s:
a SageMaker job's description has no record counts, so only the local engine logs them), find its publish
task's asset event, and the sagemaker run's link to the job's SageMaker console page. Each step leaves a
screenshot under the test's temp dir; a failure lists them. Ctrl-C (SIGINT) then stops the launcher, and
no process of its components' sessions is left.

Skipped, with the reason printed, on Airflow 2 and where chromium or Playwright is missing (`make test`
installs Debian's chromium when it runs as root).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from airflow_env import REPO, free_port
from sagemaker_stack import Stack, upload_tree

pytestmark = pytest.mark.integration

CHROMIUM = os.environ.get("AIRFLOW_BT_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]
DAG_ID = "churn_nightly_scoring"
DS = "2026-06-24"
TASKS = ("wait_for_input", "shard", "transform", "publish")


def skip_reason() -> str | None:
    from importlib.metadata import version

    if int(version("apache-airflow").split(".")[0]) < 3:
        return f"the browser test drives Airflow 3's UI (make ui); this is Airflow {version('apache-airflow')}"
    if not Path(CHROMIUM).exists():
        return f"no browser: {CHROMIUM} is missing (make test installs Debian's chromium when run as root)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright package is not installed (the test extra has it)"
    return None


if _reason := skip_reason():  # before any fixture (the session's S3 and local-sagemaker) is started for nothing
    print(f"SKIP: {_reason}")
    pytest.skip(_reason, allow_module_level=True)


@dataclass
class UI:
    url: str
    user: str
    password: str
    data_root: str
    proc: subprocess.Popen[str]
    lines: Lines
    sessions: list[int]  # the components' pids, each the leader of its session


class Lines:
    """The launcher's stdout, line by line, read by a thread (kept in ``seen`` for failure messages)."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        import queue
        import threading

        self.proc, self.seen, self.queue = proc, [], queue.Queue()  # type: list[str], queue.Queue[str | None]
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.queue.put(line)
        self.queue.put(None)

    def until(self, pattern: str, timeout: float) -> re.Match[str]:
        """The first line matching ``pattern`` (the launcher prints the login only once every component is healthy)."""
        import queue

        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                line = self.queue.get(timeout=left)
            except queue.Empty:
                break
            if line is None:
                break
            self.seen.append(line)
            if match := re.search(pattern, line):
                return match
        raise AssertionError(f"the launcher printed no line matching {pattern!r} in {timeout:.0f} s "
                             f"(exit code {self.proc.poll()}):\n{''.join(self.seen)}")


def dags_folder(tmp_path: Path) -> Path:
    """The repo's DAG file and churn config, no retries and a short job-status interval."""
    folder = tmp_path / "dags"
    (folder / "configs").mkdir(parents=True)
    shutil.copy(REPO / "dags" / "scoring_dags.py", folder)
    config = (REPO / "dags" / "configs" / "churn.yaml").read_text()
    # both test runs at once (they score different days), so the test takes the time of one
    for old, new in (("retries: 2", "retries: 0"), ("check_interval_seconds: 30", "check_interval_seconds: 1"),
                     ("max_active_runs: 1", "max_active_runs: 2")):
        assert old in config, f"churn.yaml has no {old!r} line to replace"
        config = config.replace(old, new)
    (folder / "configs" / "churn.yaml").write_text(config)
    return folder


@pytest.fixture
def ui(tmp_path: Path, demo_root: Path, sagemaker_stack: Stack) -> Iterator[UI]:
    """`scripts/ui.py` on a fresh home and a free port; the churn DAG reads and writes the stack's S3."""
    s3 = sagemaker_stack.client("s3")
    bucket = f"ui-{tmp_path.name[-20:].lower().replace('_', '-')}"
    s3.create_bucket(Bucket=bucket)
    upload_tree(s3, bucket, "root/input", demo_root / "input")
    upload_tree(s3, bucket, "root/models", demo_root / "models")
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    env.update(sagemaker_stack.airflow_env())
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, str(REPO / "scripts" / "ui.py"), "--home", str(tmp_path / "home"), "--port", str(port),
         "--dags-folder", str(dags_folder(tmp_path)), "--data-root", f"s3://{bucket}/root"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    lines, sessions = Lines(proc), []  # type: Lines, list[int]
    try:
        url = lines.until(r"^UI\s*: (http://\S+)", 240).group(1)
        login = lines.until(r"^login\s*: (\S+) / (\S+)", 10)
        pids = lines.until(r"^pids\s*:.*", 10).group(0)
        sessions = [int(pid) for pid in re.findall(r"\b(\d+)\b", pids)]
        yield UI(url, login.group(1), login.group(2), f"s3://{bucket}/root", proc, lines, sessions)
    finally:
        if proc.poll() is None:  # the test failed before its Ctrl-C
            os.kill(proc.pid, signal.SIGINT)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for member in session_members(sessions):
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(member.split()[0]), signal.SIGKILL)


class Steps:
    """Numbered screenshots of a browser session; a failure names them all."""

    def __init__(self, page: Any, folder: Path) -> None:
        self.page, self.folder, self.paths = page, folder, []  # type: list[Path]
        folder.mkdir(parents=True, exist_ok=True)

    def shot(self, name: str) -> None:
        path = self.folder / f"{len(self.paths) + 1:02d}-{name}.png"
        self.page.screenshot(path=str(path), full_page=True)
        self.paths.append(path)

    def failure(self, exc: BaseException) -> AssertionError:
        try:
            self.shot("failure")
        except Exception as shot_error:  # the page may be gone
            print(f"no failure screenshot: {shot_error}")
        listing = "\n".join(f"  {path}" for path in self.paths)
        return AssertionError(f"{exc}\nscreenshots of each step:\n{listing}")


def test_churn_dag_in_the_ui(ui: UI, tmp_path: Path) -> None:
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=30_000)  # a loaded 2-core CI machine renders slowly
    started = time.monotonic()
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.set_default_timeout(30_000)
        steps = Steps(page, tmp_path / "screenshots")
        try:
            drive(page, steps, ui, expect)
        except Exception as exc:
            raise steps.failure(exc) from exc
        finally:
            browser.close()
    print(f"UI session: {time.monotonic() - started:.1f} s; screenshots under {tmp_path / 'screenshots'}")

    # Ctrl-C: the launcher stops, and with it every process of the components' sessions (workers, tasks)
    assert len(ui.sessions) == 4, ui.lines.seen
    os.kill(ui.proc.pid, signal.SIGINT)
    assert ui.proc.wait(timeout=60) == 0, "".join(ui.lines.seen)
    stopped = ui.lines.until(r"^stopped.*", 5).group(0)
    print("".join(line for line in ui.lines.seen if "still running" in line) or "stopped at the first SIGTERM")
    assert stopped == "stopped", "".join(ui.lines.seen)  # no SIGKILL was needed
    assert session_members(ui.sessions) == [], f"left running after Ctrl-C: {session_members(ui.sessions)}"


def session_members(sessions: list[int]) -> list[str]:
    """The live processes (pid and command) whose session is one of ``sessions``."""
    left = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            command = (stat.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if int(fields[3]) in sessions and fields[0] != "Z":
            left.append(f"{stat.parent.name} {command.strip()}")
    return left


def drive(page: Any, steps: Steps, ui: UI, expect: Any) -> None:
    # log in with what the launcher printed
    page.goto(ui.url)
    page.get_by_label(re.compile("username", re.I)).fill(ui.user)
    page.get_by_label(re.compile("password", re.I)).fill(ui.password)
    steps.shot("login")
    page.get_by_role("button", name=re.compile("sign in|log ?in", re.I)).click()
    page.wait_for_url(re.compile(r"^(?!.*/auth/login)"))

    # the DAG (once the dag-processor has parsed it): its schedule summary and its docs
    wait_for_dag(page, ui.url, timeout=90)
    page.goto(f"{ui.url}/dags/{DAG_ID}")
    expect(page.get_by_text("daily, after the day closes, at 02:00 UTC").first).to_be_visible()
    steps.shot("dag")
    page.get_by_role("button", name="Dag Docs").click()
    docs = page.get_by_role("dialog")
    expect(docs).to_contain_text(f"{DAG_ID}: nightly batch scoring of churn")
    expect(docs).to_contain_text("Trigger with params to override the data root, backend or instance count")
    steps.shot("docs")
    page.keyboard.press("Escape")
    expect(docs).to_be_hidden()

    # from the trigger form: June 24 on the local backend with instance_count 2, June 23 on the sagemaker
    # backend (local-sagemaker); they run side by side
    local_run = trigger(page, steps, ui, expect, DS, instance_count="2")
    sagemaker_run = trigger(page, steps, ui, expect, "2026-06-23", backend="sagemaker")
    page.goto(local_run)
    wait_for_tasks(page, TASKS, timeout=150)
    steps.shot("run-local-succeeded")

    # the transform task's log: the job on 2 instances and its progress in records/s
    page.goto(f"{local_run}/tasks/transform")
    expect(page.get_by_text(re.compile(r"3000 record\(s\), 2 instance\(s\)")).first).to_be_visible()
    expect(page.get_by_text(re.compile(r"object \d of 2 part-\d+\.csv: \d+ records, \d+ records/s")).first
           ).to_be_visible()
    expect(page.get_by_text(re.compile(r"\d+ records in [\d.]+ s \(\d+ records/s\)")).first).to_be_visible()
    steps.shot("transform-log")

    # the publish task's asset event: the model's output root on the run's S3
    page.goto(f"{local_run}/tasks/publish/asset_events")
    expect(page.get_by_text(f"{ui.data_root}/output/churn").first).to_be_visible()
    steps.shot("publish-asset-event")

    # the sagemaker run: the transform task links the job's page in the SageMaker console
    page.goto(sagemaker_run)
    wait_for_tasks(page, TASKS, timeout=150)
    page.goto(f"{sagemaker_run}/tasks/transform/details")
    link = page.get_by_role("link", name="SageMaker transform job")
    expect(link).to_have_attribute("href", re.compile(
        r"^https://console\.aws\.amazon\.com/sagemaker/home\?region=us-east-1#/transform-jobs/bt-churn-20260623-"))
    steps.shot("transform-console-link")


def trigger(page: Any, steps: Steps, ui: UI, expect: Any, ds: str, *, instance_count: str | None = None,
            backend: str | None = None) -> str:
    """Trigger the scored day ``ds`` from the DAG's trigger form, overriding params; the run page's URL."""
    page.goto(f"{ui.url}/dags/{DAG_ID}")
    page.get_by_role("button", name="Trigger Dag").click()
    form = page.get_by_role("dialog")
    form.get_by_test_id("datetime-input").click()
    picker = page.locator("[data-scope=popover][data-part=content]").last
    picker.get_by_placeholder("YYYY/MM/DD").fill(ds.replace("-", "/"))
    picker.get_by_placeholder("HH:mm").fill("00:00")
    form.get_by_role("heading").first.click()  # closes the date picker
    day = time.strftime("%b %d, %Y", time.strptime(ds, "%Y-%m-%d"))
    expect(form.get_by_test_id("datetime-input")).to_contain_text(f"{day} 00:00")
    if instance_count is not None:
        form.locator("input[name=element_instance_count]").fill(instance_count)
    if backend is not None:
        select = form.locator("input[name=element_backend]").locator("xpath=..")
        select.locator("input[type=text]").click()
        page.get_by_role("option", name=backend, exact=True).click()
        expect(form.locator("input[name=element_backend]")).to_have_value(backend)
    steps.shot(f"trigger-form-{ds}")
    form.get_by_role("button", name="Trigger", exact=True).click()
    expect(form).to_be_hidden()
    expect(page).to_have_url(re.compile(rf"/dags/{DAG_ID}/runs/manual__"))
    return str(page.url)


def wait_for_dag(page: Any, url: str, timeout: float) -> None:
    """Until the REST API (with the browser's login) knows the DAG: the dag-processor parses it after start-up."""
    fetch = "async (u) => (await fetch(u, {credentials: 'include'})).status"
    deadline = time.monotonic() + timeout
    while (status := page.evaluate(fetch, f"{url}/api/v2/dags/{DAG_ID}")) != 200:
        if time.monotonic() > deadline:
            raise AssertionError(f"GET /api/v2/dags/{DAG_ID} still answers {status} after {timeout:.0f} s")
        page.wait_for_timeout(500)


def wait_for_tasks(page: Any, task_ids: tuple[str, ...], timeout: float) -> None:
    """Until the run page's task table shows every task Success; a failed task fails at once."""
    deadline = time.monotonic() + timeout
    states: dict[str, str] = {}
    while time.monotonic() < deadline:
        rows = page.eval_on_selector_all("tr", "rows => rows.map(r => Array.from(r.cells, c => c.innerText.trim()))")
        states = {}
        for cells in rows:
            for i, cell in enumerate(cells):
                if cell in task_ids:
                    states[cell] = " ".join(cells[i + 1:])
        if any("Failed" in state for state in states.values()):
            raise AssertionError(f"a task failed: {states}")
        if len(states) == len(task_ids) and all("Success" in state for state in states.values()):
            return
        page.wait_for_timeout(1000)
    raise AssertionError(f"the run's tasks did not all succeed in {timeout:.0f} s: {states}")
