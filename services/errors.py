"""What a face (the CLI, the web app, the API) must be ready to catch from any service:

* :class:`UserError` — the user asked for something that cannot be done, or set something
  wrong; one sentence, naming the field at fault (:mod:`postroom.errors`);
* :class:`ServerError` — a mail server or API refused, or could not be reached, while the
  service worked for the user; one sentence (:class:`providers.errors.ProviderError`).
"""

from postroom.errors import UserError
from providers.errors import ProviderError as ServerError

__all__ = ["ServerError", "UserError"]
