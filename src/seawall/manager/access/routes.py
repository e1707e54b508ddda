"""Login, the caller's own tokens, and user management: parse, call ``AccessService``
(login: ``LoginGate``, which throttles it and checks the password off the event loop)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, Field

from seawall.manager.access.guard import current_principal
from seawall.manager.access.hashing import PASSWORD_MAX_CHARS
from seawall.manager.access.login_gate import LoginGate
from seawall.manager.access.service import USER_NAME_PATTERN, AccessService, Principal

router = APIRouter(prefix="/api/v1", tags=["access"])

UserName = Field(pattern=USER_NAME_PATTERN)
TokenName = Field(default="", max_length=64)
Lifetime = Field(default=None, gt=0, description="Seconds until the token expires.")
Password = Field(min_length=1, max_length=PASSWORD_MAX_CHARS)


class LoginRequest(BaseModel):
    user: str = Field(min_length=1, max_length=64)
    password: str = Password
    name: str = Field(default="login", max_length=64)
    expires_s: float | None = Field(
        default=None, gt=0, description="Seconds until the token expires (default 30 days).")


class TokenRequest(BaseModel):
    name: str = TokenName
    expires_s: float | None = Lifetime


class UserRequest(BaseModel):
    name: str = UserName
    role: str = Field(min_length=1, max_length=16)
    password: str | None = Field(default=None, max_length=PASSWORD_MAX_CHARS)


class RoleRequest(BaseModel):
    role: str = Field(min_length=1, max_length=16)


class PasswordRequest(BaseModel):
    password: str = Password


def _service(request: Request) -> AccessService:
    service: AccessService = request.app.state.access
    return service


@router.post("/login", status_code=201)
async def login(request: Request, body: LoginRequest) -> dict[str, Any]:
    gate: LoginGate = request.app.state.login
    source = request.client.host if request.client else "unknown"
    token = await gate.login(body.user, body.password, source, body.expires_s, body.name)
    request.state.user = body.user
    return token


@router.get("/me")
def me(principal: Principal = Depends(current_principal)) -> dict[str, Any]:
    return {"user": principal.name, "role": principal.role.label,
            "token_id": principal.token_id}


@router.get("/tokens")
def my_tokens(request: Request,
              principal: Principal = Depends(current_principal)) -> list[dict[str, Any]]:
    return _service(request).list_tokens(principal.name)


@router.post("/tokens", status_code=201)
def new_token(request: Request, body: TokenRequest,
              principal: Principal = Depends(current_principal)) -> dict[str, Any]:
    return _service(request).create_token(principal.name, body.name, body.expires_s)


@router.delete("/tokens/{token_id}")
def revoke_my_token(request: Request, token_id: str,
                    principal: Principal = Depends(current_principal)) -> dict[str, Any]:
    return _service(request).revoke_token(principal.name, token_id)


@router.get("/users")
def list_users(request: Request) -> list[dict[str, Any]]:
    return _service(request).list_users()


@router.post("/users", status_code=201)
def create_user(request: Request, body: UserRequest) -> dict[str, Any]:
    return _service(request).create_user(body.name, body.role, body.password)


@router.delete("/users/{name}", status_code=204)
def delete_user(request: Request, name: str) -> None:
    _service(request).delete_user(name)


@router.put("/users/{name}/role")
def set_role(request: Request, name: str, body: RoleRequest) -> dict[str, Any]:
    return _service(request).set_role(name, body.role)


@router.put("/users/{name}/password", status_code=204)
def set_password(request: Request, name: str, body: PasswordRequest) -> None:
    _service(request).set_password(name, body.password)


@router.get("/users/{name}/tokens")
def user_tokens(request: Request, name: str) -> list[dict[str, Any]]:
    return _service(request).list_tokens(name)


@router.delete("/users/{name}/tokens/{token_id}")
def revoke_user_token(request: Request, name: str, token_id: str) -> dict[str, Any]:
    return _service(request).revoke_token(name, token_id)
