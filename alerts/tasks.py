import smtplib

from celery import shared_task

from alerts import services


def _email_retryable(exc: OSError) -> bool:
    """Connection trouble and 4xx replies are temporary; a 5xx reply or refused recipients
    will not change by retrying. (smtplib's errors are OSErrors too.)"""
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        return False
    if isinstance(exc, smtplib.SMTPResponseException):
        return 400 <= exc.smtp_code < 500
    return True


@shared_task(ignore_result=True, acks_late=True, soft_time_limit=25, time_limit=30)
def evaluate_alerts():
    """Record and notify budget thresholds and low balances crossed (at most once each)."""
    return services.alerts_evaluate()


@shared_task(
    bind=True,
    ignore_result=True,
    acks_late=True,
    soft_time_limit=30,
    time_limit=60,
    max_retries=5,
)
def send_alert_email(self, alert_id: int):
    """Email one alert (skipped if already sent)."""
    try:
        services.alert_email_send(alert_id=alert_id)
    except OSError as exc:
        services.alert_email_failed(alert_id=alert_id, error=f"{type(exc).__name__}: {exc}")
        if _email_retryable(exc):
            raise self.retry(exc=exc, countdown=60 * 2**self.request.retries) from exc


@shared_task(
    bind=True,
    ignore_result=True,
    acks_late=True,
    # Above the HTTP timeouts (alerts.webhooks.TIMEOUT), below the delivery lease.
    soft_time_limit=60,
    time_limit=90,
    # The attempt count lives in the delivery row (WEBHOOK_MAX_ATTEMPTS), not in Celery.
    max_retries=None,
)
def deliver_webhook(self, delivery_id: int):
    """One attempt at a webhook delivery; retried with exponential backoff while retryable."""
    retry_in = services.webhook_delivery_attempt(delivery_id=delivery_id)
    if retry_in is not None:
        raise self.retry(countdown=retry_in)


@shared_task(ignore_result=True, acks_late=True, soft_time_limit=50, time_limit=60)
def redeliver_stuck_webhooks():
    """Queue again the notifications whose task was lost (broker down at commit or restarted,
    a killed worker): pending webhook deliveries, and alert emails never tried."""
    for delivery_id in services.webhook_deliveries_stuck():
        deliver_webhook.delay(delivery_id)
    for alert_id in services.alert_emails_lost():
        send_alert_email.delay(alert_id)
