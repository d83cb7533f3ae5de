"""Trigger declarations only; each hands off to dlp.triggers.handlers (imported on first call: cheap cold start)."""

import azure.functions as func

app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)


@app.event_grid_trigger(arg_name="event")
def on_registry_event(event: func.EventGridEvent) -> None:
    """Microsoft.Resources.ResourceWrite/DeleteSuccess from subscription system topics.
    The binding passes a func.CloudEvent instead when the subscription uses the CloudEvents schema."""
    from dlp.triggers.handlers import on_event

    on_event(event)


@app.queue_trigger(arg_name="message", queue_name="dlp-retry", connection="AzureWebJobsStorage")
def retry_worker(message: func.QueueMessage) -> None:
    """The durable retry: work a failing dependency kept from finishing within the Event Grid budget."""
    from dlp.triggers.handlers import on_retry

    on_retry(message)


@app.route(route="recheck", methods=["POST"], auth_level=func.AuthLevel.FUNCTION)
def recheck(req: func.HttpRequest) -> func.HttpResponse:
    """POST /api/recheck {"registryId": ...} or {"scope": ...}[?remediate=true]: re-check now, same pipeline."""
    from dlp.triggers.http_api import recheck as handle

    return handle(req)


@app.route(route="health", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
def health(req: func.HttpRequest) -> func.HttpResponse:
    """GET /api/health: version, mode, configured outputs (never values), configuration error."""
    from dlp.triggers.http_api import health as handle

    return handle(req)


@app.timer_trigger(schedule="0 */5 * * * *", arg_name="timer", run_on_startup=False, use_monitor=False)
def outbox_drain(timer: func.TimerRequest) -> None:
    """Every 5 minutes: orphaned remediations, poison messages, then what the outbox keeps (dlp/triggers/timers.py)."""
    from dlp.triggers.timers import outbox_drain as handle

    handle()


@app.timer_trigger(schedule="30 */5 * * * *", arg_name="timer", run_on_startup=False, use_monitor=False)
def dead_letter_replay(timer: func.TimerRequest) -> None:
    """Every 5 minutes (offset from the outbox drain): events Event Grid could not deliver and dead-lettered
    into DLP_DEADLETTER_CONTAINER run through the pipeline like live ones (dlp/responder/deadletter.py)."""
    from dlp.triggers.timers import dead_letter_replay as handle

    handle(timer)


@app.timer_trigger(schedule="%DLP_SWEEP_SCHEDULE%", arg_name="timer", run_on_startup=False, use_monitor=True)
def sweep(timer: func.TimerRequest) -> None:
    """The scheduled sweep: every registry in DLP_SCOPES through one Resource Graph query (dlp/responder/sweep.py)."""
    from dlp.triggers.timers import sweep as handle

    handle(timer)
