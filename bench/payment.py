"""Fee collection under load: bills issued, citizens paying, callbacks lost and repeated, the reconciliation.

Placeholder for the routing the tests share; the benchmark itself follows.
"""

from __future__ import annotations

ROUTING = """
# fee collection at the unit's provider, and the one-stop software hearing about bills and payments
[destinations.payment]
kind = "payment"
provider = "{provider}"
url = "{provider_url}"
client_id = "{client_id}"
request_key_env = "MOTCUA_PAYMENT_REQUEST_KEY"
callback_key_env = "MOTCUA_PAYMENT_CALLBACK_KEY"
partner_code = "{partner}"
username = "{username}"
password_env = "MOTCUA_BANK_PASSWORD"
vnpay_tmn_code = "{tmn_code}"
vnpay_secret_env = "MOTCUA_PAYMENT_VNPAY_SECRET"
beneficiary_account = "3511.0.1054321.00000"
beneficiary_name = "Ủy ban nhân dân thành phố Hạ Long"
beneficiary_bank = "KBNN"
return_url = "https://dichvucong.quangninh.gov.vn/thanh-toan/ket-qua"
query_after = "{query_after}"
query_every = "{query_every}"
ordering = "none"
timeouts = {{ connect = 2, read = {read} }}
retry = {retry}
breaker = {{ failure_threshold = 1000, open_for = "2s" }}

[destinations.onestop]
kind = "webhook"
url = "{onestop}/subscribers/onestop/events"
secret_env = "MOTCUA_ONESTOP_WEBHOOK_SECRET"
timeouts = {{ connect = 2, read = 5 }}
retry = {retry}

[[routes]]
events = ["fee.assessed"]
origins = ["onestop"]
destination = "payment"

[[routes]]
events = ["*"]
exclude_origins = ["onestop"]
destination = "onestop"
"""
