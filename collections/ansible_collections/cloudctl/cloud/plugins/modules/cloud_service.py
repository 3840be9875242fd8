#!/usr/bin/python
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Run a daemon under the host's service manager (systemd or supervisor)."""

from __future__ import annotations

DOCUMENTATION = r"""
module: cloud_service
short_description: Run a daemon under systemd or supervisor from one description
description:
  - Renders a systemd unit or a supervisor program from the same description of a daemon,
    installs it, and brings the daemon to the wanted state.
  - When the rendered description changes, a running daemon is restarted.
  - With supervisor, starts C(supervisord) itself when it does not answer (hosts where PID 1
    is not systemd, such as containers, test labs and CI).
options:
  name:
    description: Unit or program name.
    type: str
    required: true
  command:
    description: Command line that runs the daemon in the foreground. Required unless absent.
    type: str
  manager:
    description: C(auto) picks systemd when the host was booted with it, supervisor otherwise.
    type: str
    choices: [auto, systemd, supervisor]
    default: auto
  state:
    description: Wanted state of the daemon; C(absent) removes its unit or program.
    type: str
    choices: [started, stopped, restarted, absent]
    default: started
  environment:
    description: Environment variables of the daemon.
    type: dict
    default: {}
  directory:
    description: Working directory.
    type: path
    default: /
  user:
    description: User the daemon runs as.
    type: str
    default: root
  description:
    description: Human description of the daemon.
    type: str
  log_dir:
    description: Supervisor only, where the daemon's output goes (C(<log_dir>/<name>.log)).
    type: path
    default: /var/log/cloud
  stop_signal:
    description: Signal name that stops the daemon.
    type: str
    default: TERM
  kill_mode:
    description:
      - C(group) stops the daemon with its whole process group; C(process) signals only the
        main process, so children that must outlive a restart keep running (libvirtd's QEMU
        guests). Maps to systemd C(KillMode) and supervisor C(stopasgroup)/C(killasgroup).
    type: str
    choices: [group, process]
    default: group
  stop_timeout:
    description: Seconds to wait after I(stop_signal) before killing the daemon.
    type: int
    default: 10
  start_timeout:
    description: Seconds to wait for the daemon to be running.
    type: int
    default: 30
  unit_dir:
    description: Where systemd units are written.
    type: path
    default: /etc/systemd/system
  supervisor_conf_dir:
    description: Where supervisor programs are written.
    type: path
    default: /etc/supervisor/conf.d
  supervisor_config:
    description: The main supervisord configuration file.
    type: path
    default: /etc/supervisor/supervisord.conf
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: full
    details: Reports what would change and changes nothing.
  diff_mode:
    support: full
    details: Shows the unit or program file before and after.
  platform:
    platforms: posix
author:
  - cloudctl developers (@cloudctl)
"""

EXAMPLES = r"""
- name: Run tgtd
  cloudctl.cloud.cloud_service:
    name: cloud-tgtd
    command: /usr/sbin/tgtd -f
    manager: "{{ cloud_service_manager }}"

- name: Remove it
  cloudctl.cloud.cloud_service:
    name: cloud-tgtd
    state: absent
"""

RETURN = r"""
manager:
  description: The service manager used.
  type: str
  returned: always
path:
  description: The unit or program file.
  type: str
  returned: always
running:
  description: Whether the daemon runs after the task (predicted in check mode).
  type: bool
  returned: always
"""

import os
import time

from ansible.module_utils.basic import AnsibleModule


def resolve_manager(wanted: str) -> str:
    if wanted != "auto":
        return wanted
    # sd_booted(): the canonical test that systemd is PID 1.
    return "systemd" if os.path.isdir("/run/systemd/system") else "supervisor"


def render_supervisor(p: dict) -> str:
    lines = [
        f"; managed by Ansible (cloud_service): {p['description'] or p['name']}",
        f"[program:{p['name']}]",
        f"command={p['command']}",
        f"directory={p['directory']}",
        f"user={p['user']}",
        "autostart=true",
        "autorestart=true",
        "startsecs=1",
        f"stopsignal={p['stop_signal']}",
        f"stopwaitsecs={p['stop_timeout']}",
        f"stopasgroup={'true' if p['kill_mode'] == 'group' else 'false'}",
        f"killasgroup={'true' if p['kill_mode'] == 'group' else 'false'}",
        "redirect_stderr=true",
        f"stdout_logfile={p['log_dir']}/{p['name']}.log",
        "stdout_logfile_maxbytes=10MB",
        "stdout_logfile_backups=3",
    ]
    if p["environment"]:
        pairs = ",".join(f'{k}="{v}"' for k, v in sorted(p["environment"].items()))
        lines.append(f"environment={pairs}")
    return "\n".join(lines) + "\n"


def render_systemd(p: dict) -> str:
    lines = [
        "# managed by Ansible (cloud_service)",
        "[Unit]",
        f"Description={p['description'] or p['name']}",
        "After=network-online.target",
        "",
        "[Service]",
        f"ExecStart={p['command']}",
        f"WorkingDirectory={p['directory']}",
        f"User={p['user']}",
        "Restart=on-failure",
        f"KillSignal=SIG{p['stop_signal']}",
        f"TimeoutStopSec={p['stop_timeout']}",
        f"KillMode={'control-group' if p['kill_mode'] == 'group' else 'process'}",
    ]
    lines += [f'Environment="{k}={v}"' for k, v in sorted(p["environment"].items())]
    lines += ["", "[Install]", "WantedBy=multi-user.target"]
    return "\n".join(lines) + "\n"


def read(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read()
    except FileNotFoundError:
        return None


def write_atomically(module: AnsibleModule, path: str, content: str) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        f.write(content)
        f.flush()
        os.fsync(f.fileno())
    os.chmod(tmp, 0o644)
    module.atomic_move(tmp, path)


class Supervisor:
    def __init__(self, module: AnsibleModule, p: dict):
        self.module, self.p = module, p
        self.path = os.path.join(p["supervisor_conf_dir"], f"{p['name']}.conf")
        self.ctl = ["supervisorctl", "-c", p["supervisor_config"]]

    def render(self) -> str:
        return render_supervisor(self.p)

    def daemon_answers(self) -> bool:
        rc, out, _err = self.module.run_command(self.ctl + ["pid"])
        return rc == 0 and out.strip().isdigit()

    def ensure_daemon(self) -> None:
        if self.daemon_answers():
            return
        os.makedirs(self.p["log_dir"], exist_ok=True)
        self.module.run_command(["supervisord", "-c", self.p["supervisor_config"]], check_rc=True)
        deadline = time.monotonic() + self.p["start_timeout"]
        while not self.daemon_answers():
            if time.monotonic() > deadline:
                self.module.fail_json(msg="supervisord did not answer after starting it")
            time.sleep(0.2)

    def status(self) -> str:
        """RUNNING, STOPPED, FATAL, ... or ABSENT when supervisord does not know it."""
        if not self.daemon_answers():
            return "ABSENT"
        _rc, out, _err = self.module.run_command(self.ctl + ["status", self.p["name"]])
        words = out.split()
        if len(words) >= 2 and words[0] == self.p["name"]:
            return words[1]
        return "ABSENT"

    def install(self, content: str) -> None:
        os.makedirs(self.p["log_dir"], exist_ok=True)
        write_atomically(self.module, self.path, content)
        self.ensure_daemon()
        # update adds new programs and restarts those whose configuration changed
        self.module.run_command(self.ctl + ["update", self.p["name"]], check_rc=True)

    def start(self) -> None:
        self.ensure_daemon()
        self.module.run_command(self.ctl + ["start", self.p["name"]])
        self.wait_running()

    def stop(self) -> None:
        self.module.run_command(self.ctl + ["stop", self.p["name"]])

    def restart(self) -> None:
        self.ensure_daemon()
        self.module.run_command(self.ctl + ["restart", self.p["name"]])
        self.wait_running()

    def remove(self) -> None:
        if self.daemon_answers():
            self.stop()
        os.remove(self.path)
        if self.daemon_answers():
            self.module.run_command(self.ctl + ["update"])

    def wait_running(self) -> None:
        deadline = time.monotonic() + self.p["start_timeout"]
        while True:
            state = self.status()
            if state == "RUNNING":
                return
            if state in ("FATAL", "EXITED", "BACKOFF") or time.monotonic() > deadline:
                log = os.path.join(self.p["log_dir"], f"{self.p['name']}.log")
                tail = (read(log) or "").strip().splitlines()[-5:]
                self.module.fail_json(
                    msg=f"{self.p['name']} is {state}, not running: " + " | ".join(tail)
                )
            time.sleep(0.3)

    def is_running(self) -> bool:
        return self.status() in ("RUNNING", "STARTING")


class Systemd:
    def __init__(self, module: AnsibleModule, p: dict):
        self.module, self.p = module, p
        self.path = os.path.join(p["unit_dir"], f"{p['name']}.service")

    def render(self) -> str:
        return render_systemd(self.p)

    def ctl(self, *args: str, check: bool = True) -> int:
        rc, _out, err = self.module.run_command(["systemctl", *args])
        if check and rc != 0:
            self.module.fail_json(msg=f"systemctl {' '.join(args)} failed: {err.strip()}")
        return rc

    def install(self, content: str) -> None:
        was_running = self.is_running()
        write_atomically(self.module, self.path, content)
        self.ctl("daemon-reload")
        self.ctl("enable", self.p["name"])
        if was_running:
            self.restart()

    def start(self) -> None:
        self.ctl("start", self.p["name"])

    def stop(self) -> None:
        self.ctl("stop", self.p["name"], check=False)

    def restart(self) -> None:
        self.ctl("restart", self.p["name"])

    def remove(self) -> None:
        self.ctl("disable", "--now", self.p["name"], check=False)
        os.remove(self.path)
        self.ctl("daemon-reload")

    def is_running(self) -> bool:
        return self.ctl("is-active", "--quiet", self.p["name"], check=False) == 0


def core(module: AnsibleModule) -> dict:
    p = dict(module.params)
    state = p["state"]
    if state != "absent" and not p["command"]:
        module.fail_json(msg=f"service {p['name']}: command is required unless state=absent")
    manager_name = resolve_manager(p["manager"])
    manager = Systemd(module, p) if manager_name == "systemd" else Supervisor(module, p)

    current = read(manager.path)
    running = manager.is_running()
    wanted = None if state == "absent" else manager.render()
    config_changed = current != wanted
    changed = config_changed
    will_run = state in ("started", "restarted")
    if state == "restarted" or running != will_run:
        changed = True

    result = {
        "changed": changed,
        "manager": manager_name,
        "path": manager.path,
        "running": will_run,
        "diff": {
            "before_header": manager.path,
            "after_header": manager.path,
            "before": f"{current or ''}# running: {running}\n",
            "after": f"{wanted or ''}# running: {will_run}\n",
        },
    }
    if module.check_mode or not changed:
        return result

    if state == "absent":
        if current is not None:
            manager.remove()
        return result
    if config_changed:
        manager.install(wanted)
        running = manager.is_running()
    if state == "started" and not running:
        manager.start()
    elif state == "restarted" and not config_changed:
        manager.restart()
    elif state == "stopped" and running:
        manager.stop()
    if will_run and isinstance(manager, Supervisor):
        manager.wait_running()
    return result


def main() -> None:
    module = AnsibleModule(
        argument_spec=dict(
            name=dict(type="str", required=True),
            command=dict(type="str"),
            manager=dict(type="str", default="auto", choices=["auto", "systemd", "supervisor"]),
            state=dict(
                type="str", default="started", choices=["started", "stopped", "restarted", "absent"]
            ),
            environment=dict(type="dict", default={}),
            directory=dict(type="path", default="/"),
            user=dict(type="str", default="root"),
            description=dict(type="str"),
            log_dir=dict(type="path", default="/var/log/cloud"),
            stop_signal=dict(type="str", default="TERM"),
            kill_mode=dict(type="str", default="group", choices=["group", "process"]),
            stop_timeout=dict(type="int", default=10),
            start_timeout=dict(type="int", default=30),
            unit_dir=dict(type="path", default="/etc/systemd/system"),
            supervisor_conf_dir=dict(type="path", default="/etc/supervisor/conf.d"),
            supervisor_config=dict(type="path", default="/etc/supervisor/supervisord.conf"),
        ),
        supports_check_mode=True,
    )
    module.exit_json(**core(module))


if __name__ == "__main__":
    main()
