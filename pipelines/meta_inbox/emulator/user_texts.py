"""What Graph writes for a person in an error envelope (`error_user_title`, `error_user_msg`).

Graph writes these in the token owner's language while the developer `message` stays English, so
a client that classified errors on human text would break for a Spanish-speaking Page admin. The
emulator only knows the errors it sends; any other code gets the generic text.
"""

from __future__ import annotations

from collections.abc import Hashable

RETRY_LATER = "Espera un poco y vuelve a intentarlo."

# Keys: a kind that the error code alone does not tell (two errors share code 1 and code 100),
# then `(code, subcode)`, then `code`, then "generic".
USER_TEXTS: dict[str, dict[Hashable, tuple[str, str]]] = {
    "es": {
        "reduce_data": (
            "Demasiados datos",
            "Has pedido demasiados datos de una vez. Pide menos y vuelve a intentarlo.",
        ),
        "invalid_cursor": (
            "Cursor no válido",
            "El cursor de paginación no es válido o ha caducado. Vuelve a empezar la lista.",
        ),
        1: ("Error desconocido", f"Se ha producido un error desconocido. {RETRY_LATER}"),
        2: ("Error temporal del servicio", f"El servicio no está disponible. {RETRY_LATER}"),
        4: (
            "Límite de solicitudes de la aplicación",
            f"Esta aplicación ha hecho demasiadas solicitudes. {RETRY_LATER}",
        ),
        17: (
            "Límite de solicitudes del usuario",
            f"Has hecho demasiadas solicitudes. {RETRY_LATER}",
        ),
        32: (
            "Límite de solicitudes de la página",
            f"Se han hecho demasiadas solicitudes a esta página. {RETRY_LATER}",
        ),
        613: (
            "Límite de frecuencia superado",
            f"Las llamadas a esta API han superado el límite de frecuencia. {RETRY_LATER}",
        ),
        80001: (
            "Demasiadas llamadas a la página",
            f"Se han hecho demasiadas llamadas a esta página. {RETRY_LATER}",
        ),
        80002: (
            "Demasiadas llamadas a Instagram",
            f"Se han hecho demasiadas llamadas a esta cuenta de Instagram. {RETRY_LATER}",
        ),
        80006: (
            "Demasiadas llamadas a Messenger",
            f"Se han hecho demasiadas llamadas a la API de Messenger para esta página. "
            f"{RETRY_LATER}",
        ),
        100: ("Parámetro no válido", "Uno de los parámetros de la solicitud no es válido."),
        (100, 33): (
            "El objeto no existe",
            "El objeto solicitado no existe o no tienes permiso para verlo.",
        ),
        104: (
            "Falta el token de acceso",
            "Se necesita un token de acceso para solicitar este recurso.",
        ),
        190: (
            "Sesión no válida",
            "Tu sesión ha caducado o ya no es válida. Vuelve a iniciar sesión.",
        ),
        200: (
            "Falta un permiso",
            "La aplicación no tiene el permiso necesario para hacer esto.",
        ),
        210: (
            "Se necesita un token de página",
            "Esta solicitud necesita un token de acceso de la página.",
        ),
        2500: ("Consulta no válida", "No se ha podido interpretar la lista de campos pedida."),
        9000001: ("Mensaje eliminado", "El usuario o la empresa ha eliminado este mensaje."),
        "generic": ("Error", f"Se ha producido un error. {RETRY_LATER}"),
    },
}


def user_text(language: str, code: int, subcode: int | None, kind: str | None) -> tuple[str, str]:
    """The title and text a person reading `language` sees for this error."""
    texts = USER_TEXTS[language]
    for key in (kind, (code, subcode), code):
        if key in texts:
            return texts[key]
    return texts["generic"]
