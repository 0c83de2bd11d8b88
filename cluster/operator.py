"""`easel operator`: a control loop that moves traffic and capacity between providers.

Each provider is its own Ray cluster, and inside it Serve autoscales every model's deployment
within its bounds (the Ray autoscaler adds the pods). The operator works one level up, per
(model, provider) *route*: it moves the gateway's traffic weights between a model's providers
(price, headroom, health) through the routing admin API, and moves capacity by changing the
*ceiling* of a route (its deployment's Serve `max_replicas` in that provider's serveConfigV2,
`easel scale`'s mechanism). Each interval it reads the gateway's routing view and every
provider's RayService, decides (`decide`, pure), applies, and logs each decision with its reason
as one JSON line. The rules, per model:

1. Bounds: a ceiling below the route's floor (its Serve `min_replicas`, at least 1) is raised to
   it; one that no longer fits the provider's worker groups is lowered until it does.
2. Errors: a route whose failed share over the last `cooldown_s` exceeds `max_error_rate`
   (judged from `min_requests` requests) gets weight 0 and gives `scale_step` of its ceiling to
   the cheapest other healthy provider with headroom. Unhealthy without failed requests (pods
   starting) costs weight only, never capacity.
3. Queue depth: the model's outstanding requests per replica of ceiling above `queue_high`
   raise the ceiling at the cheapest healthy provider with headroom; below `queue_low` lower it
   at the most expensive healthy provider above its floor.
4. Price: healthy routes' weights are proportional to ceiling x (cheapest price / price) **
   `price_exponent`; drained routes are left as the cluster's operator set them.

Scaling in drains first: before a ceiling goes down the route is drained at the gateway and the
operator waits (at most `drain_timeout_s`) for its requests in flight to finish, then patches,
then undrains. A model's only serving route is not drained (its customers would get 503s):
Serve's graceful replica shutdown drains the replica it removes. A route is scaled at most once
per `cooldown_s`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import defaultdict, deque
from collections.abc import Callable, Mapping

from cluster import capacity
from cluster.kuberay import serve_deployment_name
from cluster.operator_policy import Decision, Fits, Plan, RouteState, decide
from cluster.routing_client import RoutingClient, RoutingView
from cluster.scaling import ClusterState, ProviderCluster, ScaleError, scale_provider
from config import EaselConfig

__all__ = ["Decision", "Operator", "Plan", "RouteState", "decide"]

logger = logging.getLogger("easel.operator")


class Operator:
    """Reads, decides, applies and logs, once per `step()`; `run()` loops.

    Args:
        clusters: per provider, its RayService on Kubernetes; None moves weights only.
        clock, sleep: injectable for tests (the drain wait polls with `sleep`).
    """

    def __init__(
        self,
        cfg: EaselConfig,
        routing: RoutingClient,
        clusters: Mapping[str, ProviderCluster] | None,
        dry_run: bool = False,
        clock: Callable[[], float] = time.monotonic,
        emit: Callable[[Decision], None] | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.cfg = cfg
        self.routing = routing
        self.clusters = dict(clusters or {})
        self.dry_run = dry_run
        self.clock = clock
        self.sleep = sleep
        self.emit = emit or (lambda d: logger.info(d.to_json()))
        self._history: dict[tuple[str, str], deque[tuple[float, int, int]]] = {}
        self._last_scaled: dict[tuple[str, str], float] = {}

    def step(self) -> list[Decision]:
        """One interval: read the gateway and Kubernetes, decide, apply (unless dry run), log."""
        now = self.clock()
        view = self.routing.show()
        cluster_states, unread = {}, []
        for p, c in self.clusters.items():
            try:
                cluster_states[p] = c.read()
            except ScaleError as exc:  # one provider's API down: the others still move
                unread.append(Decision("hold", "*", p, 0, 0, f"cannot read its cluster: {exc}"))
        states = self._states(view, cluster_states, now)
        plan = decide(states, self.cfg.operator, self._fits(cluster_states))
        done = unread + (plan.decisions if self.dry_run else self._apply(plan, states, now))
        for d in done:
            self.emit(d)
        return done

    def run(self, iterations: int | None = None, stop: threading.Event | None = None) -> None:
        """Step every `operator.interval_s` until `iterations` are done or `stop` is set."""
        stop = stop or threading.Event()
        done = 0
        while not stop.is_set() and (iterations is None or done < iterations):
            try:
                self.step()
            except Exception as exc:  # one bad interval (a cluster restarting) must not end it
                self.emit(Decision("hold", "*", "*", 0, 0, f"interval failed: {exc}"))
            done += 1
            if iterations is None or done < iterations:
                stop.wait(self.cfg.operator.interval_s)

    # --- reading -----------------------------------------------------------------------------

    def _states(
        self, view: RoutingView, clusters: dict[str, ClusterState], now: float
    ) -> list[RouteState]:
        window = max(self.cfg.operator.cooldown_s, self.cfg.operator.interval_s)
        states = []
        for r in view.routes:
            try:
                p = self.cfg.provider(r.provider)
                m = self.cfg.model(r.model)
            except KeyError:
                continue  # a route the config does not know (another config's gateway)
            if m.backend != "diffusers":
                continue  # closed models: the vendor's capacity, not ours
            bounds = clusters[p.name].serve_bounds() if p.name in clusters else {}
            b = bounds.get(serve_deployment_name(m.name, p.name))
            ceiling = b.max_replicas if b else m.autoscaling.max_replicas
            floor = b.min_replicas if b else m.autoscaling.min_replicas
            requests, errors = self._window((m.name, p.name), now, r.requests, r.errors, window)
            last = self._last_scaled.get((m.name, p.name), float("-inf"))
            states.append(
                RouteState(
                    model=m.name,
                    provider=p.name,
                    price_per_gpu_hour=p.price_per_gpu_hour,
                    ceiling=ceiling,
                    floor=floor,
                    weight=r.weight,
                    healthy=r.healthy,
                    drained=r.drained,
                    outstanding=r.outstanding,
                    window_requests=requests,
                    window_errors=errors,
                    seconds_since_scaled=now - last,
                    # Without its cluster (--no-k8s, or unreadable) a route moves weight only.
                    scalable=p.name in clusters,
                )
            )
        return states

    def _fits(self, clusters: dict[str, ClusterState]) -> Fits:
        def fits(provider: str, ceilings: Mapping[str, int]) -> bool:
            state = clusters.get(provider)
            if state is None:
                return False
            p = self.cfg.provider(provider)
            group_max = {g: s.max_replicas for g, s in state.worker_groups().items()}
            bounds = state.serve_bounds()
            replicas = {}
            for m in capacity.hosted_models(self.cfg, p):
                live = bounds.get(serve_deployment_name(m.name, provider))
                ceiling = live.max_replicas if live else m.autoscaling.max_replicas
                replicas[m.name] = ceilings.get(m.name, ceiling)
            return capacity.fits(self.cfg, p, replicas, group_max)

        return fits

    def _window(
        self, key: tuple[str, str], now: float, requests: int, errors: int, window: float
    ) -> tuple[int, int]:
        """Requests and errors over the last `window` seconds, from cumulative counters."""
        hist = self._history.setdefault(key, deque())
        if hist and (requests < hist[-1][1] or errors < hist[-1][2]):
            hist.clear()  # the gateway restarted: its counters began again
        hist.append((now, requests, errors))
        while len(hist) > 1 and hist[1][0] <= now - window:
            hist.popleft()
        if len(hist) == 1:
            return requests, errors
        return requests - hist[0][1], errors - hist[0][2]

    # --- applying ----------------------------------------------------------------------------

    def _apply(self, plan: Plan, states: list[RouteState], now: float) -> list[Decision]:
        """Scale out, then scale in (draining first), then send weights; returns what was done
        (a scale-in whose drain timed out becomes a 'hold')."""
        done = [d for d in plan.decisions if d.action != "scale"]
        scales = [d for d in plan.decisions if d.action == "scale"]
        ups = [d for d in scales if d.after > d.before]
        downs = [d for d in scales if d.after < d.before]
        by_provider: dict[str, list[Decision]] = defaultdict(list)
        for d in ups:
            by_provider[d.provider].append(d)
        for provider, ds in by_provider.items():
            self._patch(provider, ds, now)
            done += ds
        for d in downs:
            done += self._scale_in(d, states, now)
        for model, weights in plan.weights.items():
            self.routing.update(weights=weights, model=model)
        return done

    def _patch(self, provider: str, decisions: list[Decision], now: float) -> None:
        cluster = self.clusters[provider]
        serve = {d.model: (None, int(d.after)) for d in decisions}
        scale_provider(self.cfg, self.cfg.provider(provider), cluster, serve=serve)
        for d in decisions:
            self._last_scaled[(d.model, d.provider)] = now

    def _scale_in(self, d: Decision, states: list[RouteState], now: float) -> list[Decision]:
        others = [
            s
            for s in states
            if s.model == d.model and s.provider != d.provider and s.healthy and not s.drained
        ]
        if not others:
            # Draining the model's only route would turn its traffic into 503s; Serve drains
            # the replica it removes (graceful shutdown) instead.
            self._patch(d.provider, [d], now)
            return [d]
        self.routing.update(drain=[d.provider], model=d.model)
        try:
            drained = self._wait_drained(d.model, d.provider)
            if drained:
                self._patch(d.provider, [d], now)
        finally:
            self.routing.update(undrain=[d.provider], model=d.model)
        if not drained:
            why = (
                f"drain of {d.provider} for {d.model} did not finish within "
                f"{self.cfg.operator.drain_timeout_s:g}s; not scaling in ({d.reason})"
            )
            return [Decision("hold", d.model, d.provider, d.before, d.before, why)]
        return [
            Decision("scale", d.model, d.provider, d.before, d.after, f"{d.reason} (drained first)")
        ]

    def _wait_drained(self, model: str, provider: str) -> bool:
        deadline = self.clock() + self.cfg.operator.drain_timeout_s
        while True:
            view = self.routing.show()
            left = [
                r.outstanding for r in view.routes if r.model == model and r.provider == provider
            ]
            if not left or left[0] == 0:
                return True
            if self.clock() >= deadline:
                return False
            self.sleep(0.25)
