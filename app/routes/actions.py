"""``/api/actions``: like, collect and share posts and articles; like comments."""

from __future__ import annotations

from flask import Blueprint, g

from engine import TargetMissing

from .. import actions
from ..auth import user_required
from ..errors import bad_request, not_found
from ..ids import valid_id
from ..payload import json_object

bp = Blueprint("actions", __name__, url_prefix="/api/actions")


def _resolve(action_type, target_type):
    if action_type not in actions.ACTIONS:
        raise bad_request(f"action_type must be one of {', '.join(actions.ACTIONS)}")
    target = actions.TARGETS.get(target_type) if isinstance(target_type, str) else None
    if target is None:
        raise bad_request(f"target_type must be one of {', '.join(actions.TARGETS)}")
    if action_type not in target.actions:
        raise bad_request(f"cannot {action_type} a {target_type}")
    return target


def _echo(action_type: str, target_type: str, target_id: int) -> dict:
    return {"action_type": action_type, "target_type": target_type, "target_id": target_id}


@bp.post("")
@user_required
def create():
    data = json_object()
    action_type, target_type = data.get("action_type"), data.get("target_type")
    target = _resolve(action_type, target_type)
    target_id = data.get("target_id")
    if not isinstance(target_id, int) or isinstance(target_id, bool):
        raise bad_request("target_id must be an integer")
    if not valid_id(target_id):
        raise not_found(target_type)
    try:
        created = actions.add(target, action_type, g.user_id, target_id)
    except TargetMissing:
        raise not_found(target_type) from None
    return _echo(action_type, target_type, target_id), 201 if created else 200


@bp.delete("/<action_type>/<target_type>/<id:target_id>")
@user_required
def delete(action_type: str, target_type: str, target_id: int):
    target = _resolve(action_type, target_type)
    if action_type not in actions.TOGGLES:
        raise bad_request(f"a {action_type} cannot be undone", "not_undoable")
    try:
        removed = actions.remove(target, action_type, g.user_id, target_id)
    except TargetMissing:
        raise not_found(target_type) from None
    if not removed:
        raise not_found(action_type)
    return "", 204
