defmodule Symbiont.Health.Window do
  @moduledoc """
  A replica's failure rate over its last deliveries, and the health it gives (see "How
  it is doing" in `Symbiont.Observation`): whoever wrote the agent (Python or Wasm), and
  whether or not it ever calls `self.health`.

  The window holds the outcome of the replica's last #{20} deliveries: acked, or failed
  (its handler raised or was cancelled at its timeout, a nack; or its host died while it
  handled it). The health it gives has hysteresis, so that it does not flap:

  | now | becomes | when, over the window |
  |---|---|---|
  | `healthy` | `degraded` | 20% of the deliveries failed, 2 at least |
  | any | `failing` | 50% failed, 3 at least |
  | `failing` | `degraded` (or `healthy`) | below 30% |
  | `degraded` | `healthy` | below 10% |

  So an agent failing every event is `failing` from its third failure, and back to
  `healthy` after 19 deliveries in a row succeed. Failures stop counting once the newest
  of them is #{60} s old (`expire/2`): an agent that failed, then had nothing to do for a
  minute, is no longer judged by them.

      iex> alias Symbiont.Health.Window
      iex> w = Enum.reduce(1..3, Window.new(), fn _, w -> Window.failed(w, 0) end)
      iex> Window.kind(w, "healthy")
      "failing"
      iex> w = Window.ok(w, 15)
      iex> {Window.counts(w), Window.kind(w, "failing")}
      {{18, 3}, "degraded"}
      iex> w |> Window.ok(4) |> Window.kind("degraded")
      "healthy"
  """
  import Bitwise

  @size 20
  @full (1 <<< @size) - 1
  @expire_ms 60_000

  @typedoc """
  `{deliveries, outcomes, failed, last_failure_ms}`: how many deliveries the window holds
  (at most #{20}), one bit each (1: failed; the newest lowest), how many of them failed,
  and when the newest failure was (monotonic ms), `nil` for none.
  """
  @type t :: {0..20, non_neg_integer, 0..20, integer | nil}

  @doc "An empty window: no delivery yet."
  @spec new() :: t
  def new, do: {0, 0, 0, nil}

  @doc "How many deliveries the window holds."
  @spec size() :: pos_integer
  def size, do: @size

  @doc "`k` more deliveries acked."
  @spec ok(t, non_neg_integer) :: t
  def ok({@size, 0, 0, _} = w, _k), do: w
  def ok({n, 0, 0, at}, k), do: {min(n + k, @size), 0, 0, at}

  def ok({n, mask, _failed, at}, k) do
    mask = mask <<< min(k, @size) &&& @full
    {min(n + k, @size), mask, popcount(mask), at}
  end

  @doc "One more delivery failed, at `now_ms` (monotonic)."
  @spec failed(t, integer) :: t
  def failed({n, mask, _failed, _at}, now_ms) do
    mask = (mask <<< 1 ||| 1) &&& @full
    {min(n + 1, @size), mask, popcount(mask), now_ms}
  end

  @doc """
  The window without its failures once the newest of them is #{60} s old at `now_ms`
  (the deliveries they were among are forgotten with them).
  """
  @spec expire(t, integer) :: t
  def expire({_, _, failed, at}, now_ms) when failed > 0 and now_ms - at >= @expire_ms, do: new()
  def expire(w, _now_ms), do: w

  @doc "Milliseconds until `expire/2` forgets the failures, `nil` when there are none."
  @spec expires_in(t, integer) :: non_neg_integer | nil
  def expires_in({_, _, 0, _}, _now_ms), do: nil
  def expires_in({_, _, _, at}, now_ms), do: max(at + @expire_ms - now_ms, 0)

  @doc "`{deliveries, failed}` in the window."
  @spec counts(t) :: {non_neg_integer, non_neg_integer}
  def counts({n, _, failed, _}), do: {n, failed}

  @doc """
  The health the window gives, from the one it gave before (`prev`): `"healthy"`,
  `"degraded"` or `"failing"` (see the table in the moduledoc).
  """
  @spec kind(t, String.t()) :: String.t()
  def kind({n, _, f, _}, prev) do
    cond do
      f >= 3 and 100 * f >= 50 * n -> "failing"
      prev == "failing" and 100 * f >= 30 * n and f > 0 -> "failing"
      f >= 2 and 100 * f >= 20 * n -> "degraded"
      prev in ["failing", "degraded"] and 100 * f >= 10 * n and f > 0 -> "degraded"
      true -> "healthy"
    end
  end

  @doc "Why the window gives its health, for a health event."
  @spec reason(t) :: String.t()
  def reason({n, _, f, _}), do: "#{f} of its last #{n} deliveries failed"

  defp popcount(0), do: 0
  defp popcount(m), do: (m &&& 1) + popcount(m >>> 1)
end
