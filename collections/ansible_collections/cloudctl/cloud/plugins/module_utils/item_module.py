# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Run the code of a one-resource module for one item of a module that handles many at once
(several at the same time, in threads), with the item's failure kept to the item."""

from __future__ import annotations

from ansible.module_utils.common.arg_spec import ArgumentSpecValidator


class ItemFailed(Exception):
    """fail_json of one item: its message and result fields."""

    def __init__(self, msg: str, fields: dict) -> None:
        super().__init__(msg)
        self.msg = msg
        self.fields = fields


class ItemModule:
    """The part of AnsibleModule that the one-resource code uses, for one item: the item's
    own params; fail_json raises ItemFailed instead of ending the process (other items go
    on); warnings, commands and binaries are the real module's. The params are checked
    against the one-resource module's spec (types, choices, defaults, required_if)."""

    def __init__(self, module, spec: dict, params: dict, required_if=None) -> None:
        self.module = module
        checked = ArgumentSpecValidator(spec, required_if=required_if).validate(params)
        if checked.error_messages:
            raise ItemFailed("; ".join(checked.error_messages), {})
        self.params = checked.validated_parameters
        self.check_mode = module.check_mode
        self._diff = module._diff

    def fail_json(self, msg: str, **fields) -> None:
        raise ItemFailed(msg, fields)

    def warn(self, warning: str) -> None:
        self.module.warn(warning)

    def run_command(self, *args, **kwargs):
        return self.module.run_command(*args, **kwargs)

    def get_bin_path(self, *args, **kwargs):
        return self.module.get_bin_path(*args, **kwargs)


def run_item(module, spec: dict, params: dict, core, required_if=None) -> dict:
    """core(item module) for one item: its result, or {"failed": True, "msg": ...} with the
    fields fail_json gave."""
    try:
        return core(ItemModule(module, spec, params, required_if))
    except ItemFailed as exc:
        return {**exc.fields, "failed": True, "msg": exc.msg}
