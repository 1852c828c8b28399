defmodule Symbiont.Stats do
  @moduledoc """
  The statistics behind the analytics (docs/ANALYTICS.md): whether what an agent does now
  is worse than what it did before, from few samples as well as from many. Pure
  functions, used by the agents' own signals (`Symbiont.Signals`, read by the conductor)
  and by the canary gate of `Symbiont.Deploy` alike, so that both judge the same way.

  ## Latency: k of n above a bar

  A **baseline** (`baseline/1`) is what a version did before: its p50 and p99 over `m`
  samples. A sample from the same distribution exceeds the baseline's nearest-rank
  q-quantile with probability `(m - ceil(q·m) + 1) / (m + 1)` (`exceed/2`: 1/(m+1) for
  each of the ranks above it, whatever the distribution). The recent samples are counted
  against two **bars**, each a baseline quantile times `:ratio` and at least that
  quantile plus `:slack_us` (the effect size: a version 1% slower crosses neither):

    * the tail: `max(ratio · p99, p99 + slack)`, exceeded by chance with at most the
      probability of exceeding the p99;
    * the body: the same from the p50, exceeded by chance with at most that of the p50.

  If nothing changed, the count `k` of the `n` recent samples above a bar is at most
  binomial with that probability `p0`, and `p = P(Bin(n, p0) >= k)` (`binomial_tail/3`)
  says how surprising `k` is: 3 of 3 samples above the tail bar of a baseline of 100 is
  `p` = 8e-6; 3 of 100 is 0.3. The evidence is the test with the smaller `p` (at most
  twice as likely to be wrong as either alone). No fixed sample count is needed: few
  slow samples are evidence when they are slow enough, many fast ones are none.

  ## Failures: k of n against the baseline rate

  `failures/4`: `k` failures in the last `n` deliveries against a baseline failure rate
  `r0` (at least `:floor`, 1%: a version that never failed is not condemned for its first
  failure): `p = P(Bin(n, max(r0, floor)) >= k)`, and no evidence (`p` = 1.0) unless
  `k/n` exceeds `r0` by `:min_increase` (the effect size).

  The caller decides: `worse?/2` compares `p` with a threshold (`alpha`, 1e-3 by
  default).

      iex> base = Symbiont.Stats.baseline(Enum.map(1..100, &(&1 * 10)))
      iex> {base.n, base.p50_us, base.p99_us}
      {100, 500, 990}
      iex> e = Symbiont.Stats.latency([40_000, 41_000, 39_000], base)
      iex> {e.n, e.k, Symbiont.Stats.worse?(e)}
      {3, 3, true}
      iex> Symbiont.Stats.latency([400, 520, 610], base) |> Symbiont.Stats.worse?()
      false
  """

  @defaults [ratio: 2.0, slack_us: 5_000, floor: 0.01, min_increase: 0.05]

  @typedoc "A baseline: its sample count `n` and its `p50_us` and `p99_us`."
  @type baseline :: %{
          :n => pos_integer,
          :p50_us => number,
          :p99_us => number,
          # Kept with it by Symbiont.Signals: the failure rate, and whose it is.
          optional(:rate) => float,
          optional(:version) => String.t()
        }

  @typedoc """
  The evidence of a latency comparison: `n` recent samples, `k` of them above `bar_us`
  (the tail's or the body's bar, `test`: `:tail` or `:body`), `p` (the probability of
  `k` or more above it if nothing changed), and the recent `p50_us` and `p99_us`.
  """
  @type latency :: %{
          n: non_neg_integer,
          k: non_neg_integer,
          bar_us: number,
          test: :tail | :body,
          p: float,
          p50_us: number | nil,
          p99_us: number | nil
        }

  @typedoc "The evidence of a failure comparison: `k` of `n` failed, baseline `rate`, `p`."
  @type failures :: %{n: non_neg_integer, k: non_neg_integer, rate: float, p: float}

  @doc "The default options: `#{inspect(@defaults)}`."
  @spec defaults() :: keyword
  def defaults, do: @defaults

  @doc """
  The `q`-quantile (`0 < q <= 1`) of `values` by nearest rank, `nil` for none.

      iex> Symbiont.Stats.percentile(Enum.to_list(1..100), 0.99)
      99
      iex> Symbiont.Stats.percentile([], 0.5)
      nil
  """
  @spec percentile([number], float) :: number | nil
  def percentile([], _q), do: nil

  def percentile(values, q) when q > 0 and q <= 1,
    do: values |> Enum.sort() |> sorted_percentile(length(values), q)

  defp sorted_percentile(sorted, n, q), do: Enum.at(sorted, rank(n, q) - 1)

  defp rank(n, q), do: min(n, max(1, ceil(n * q)))

  @doc """
  The baseline of `values` (latencies, µs): `%{n, p50_us, p99_us}`; `nil` for none.
  """
  @spec baseline([number]) :: baseline | nil
  def baseline([]), do: nil

  def baseline(values) do
    n = length(values)
    sorted = Enum.sort(values)
    %{n: n, p50_us: sorted_percentile(sorted, n, 0.5), p99_us: sorted_percentile(sorted, n, 0.99)}
  end

  @doc """
  The probability that one more sample of the same distribution exceeds the nearest-rank
  `q`-quantile of `m` samples: `(m - ceil(q·m) + 1) / (m + 1)` (ties aside).

      iex> Symbiont.Stats.exceed(99, 0.99)
      0.01
      iex> Symbiont.Stats.exceed(1, 0.99)
      0.5
  """
  @spec exceed(pos_integer, float) :: float
  def exceed(m, q) when is_integer(m) and m > 0, do: (m - rank(m, q) + 1) / (m + 1)

  @doc """
  `P(X >= k)` for `X ~ Binomial(n, p)`: how likely `k` or more successes of `n` are.

      iex> Float.round(Symbiont.Stats.binomial_tail(3, 3, 0.01), 9)
      1.0e-6
      iex> Symbiont.Stats.binomial_tail(10, 0, 0.3)
      1.0
      iex> Float.round(Symbiont.Stats.binomial_tail(10, 5, 0.5), 4)
      0.623
  """
  @spec binomial_tail(non_neg_integer, integer, float) :: float
  def binomial_tail(_n, k, _p) when k <= 0, do: 1.0
  def binomial_tail(n, k, _p) when k > n, do: 0.0
  def binomial_tail(_n, _k, p) when p <= 0, do: 0.0
  def binomial_tail(_n, _k, p) when p >= 1, do: 1.0

  def binomial_tail(n, k, p) do
    # The first term in logs (C(n, k) p^k q^(n-k)), each next one from the last.
    log_c = Enum.reduce(1..k//1, 0.0, fn j, acc -> acc + :math.log(n - k + j) - :math.log(j) end)
    first = :math.exp(log_c + k * :math.log(p) + (n - k) * :math.log(1 - p))
    odds = p / (1 - p)

    {sum, _} =
      Enum.reduce(k..(n - 1)//1, {first, first}, fn i, {sum, term} ->
        term = term * (n - i) / (i + 1) * odds
        {sum + term, term}
      end)

    min(sum, 1.0)
  end

  @doc """
  The evidence that the latencies `recent` (µs) are worse than `baseline` (see the
  moduledoc); `nil` without samples or baseline. Options: `:ratio` (2.0) and `:slack_us`
  (5000), the effect size.
  """
  @spec latency([number], baseline | nil, keyword) :: latency | nil
  def latency(recent, baseline, opts \\ [])
  def latency([], _baseline, _opts), do: nil
  def latency(_recent, nil, _opts), do: nil

  def latency(recent, %{n: m, p50_us: p50, p99_us: p99}, opts) do
    ratio = Keyword.get(opts, :ratio, @defaults[:ratio])
    slack = Keyword.get(opts, :slack_us, @defaults[:slack_us])
    n = length(recent)
    sorted = Enum.sort(recent)
    tail = test(sorted, n, max(ratio * p99, p99 + slack), exceed(m, 0.99), :tail)
    body = test(sorted, n, max(ratio * p50, p50 + slack), exceed(m, 0.5), :body)
    best = if body.p < tail.p, do: body, else: tail

    Map.merge(best, %{
      n: n,
      p50_us: sorted_percentile(sorted, n, 0.5),
      p99_us: sorted_percentile(sorted, n, 0.99)
    })
  end

  defp test(sorted, n, bar, p0, name) do
    k = Enum.count(sorted, &(&1 > bar))
    %{k: k, bar_us: round(bar), test: name, p: binomial_tail(n, k, p0)}
  end

  @doc """
  The evidence that `k` failures in `n` deliveries are worse than a baseline failure
  rate `rate` (see the moduledoc); `nil` for no deliveries. Options: `:floor` (0.01) and
  `:min_increase` (0.05).

      iex> Symbiont.Stats.failures(20, 20, 0.0).p < 1.0e-30
      true
      iex> Symbiont.Stats.failures(100, 1, 0.0).p
      1.0
  """
  @spec failures(non_neg_integer, non_neg_integer, float, keyword) :: failures | nil
  def failures(n, k, rate, opts \\ [])
  def failures(0, _k, _rate, _opts), do: nil

  def failures(n, k, rate, opts) do
    floor = Keyword.get(opts, :floor, @defaults[:floor])
    min_increase = Keyword.get(opts, :min_increase, @defaults[:min_increase])

    p =
      if k / n >= rate + min_increase,
        do: binomial_tail(n, k, min(max(rate, floor), 1.0)),
        else: 1.0

    %{n: n, k: k, rate: rate, p: p}
  end

  @doc "Whether `evidence` (of `latency/3` or `failures/4`) says worse: `p <= alpha`."
  @spec worse?(%{p: float} | nil, float) :: boolean
  def worse?(evidence, alpha \\ 1.0e-3)
  def worse?(nil, _alpha), do: false
  def worse?(%{p: p}, alpha), do: p <= alpha

  @doc """
  The least-squares slope of `points` (`[{x, y}]`: y per unit of x) and how well a line
  fits them (r², 0 to 1; 1.0 when y does not vary); `nil` for fewer than two distinct x.

      iex> Symbiont.Stats.slope([{0, 10}, {1, 12}, {2, 14}])
      {2.0, 1.0}
  """
  @spec slope([{number, number}]) :: {float, float} | nil
  def slope(points) when length(points) < 2, do: nil

  def slope(points) do
    n = length(points)
    {sx, sy} = Enum.reduce(points, {0, 0}, fn {x, y}, {sx, sy} -> {sx + x, sy + y} end)
    {mx, my} = {sx / n, sy / n}

    {sxx, sxy, syy} =
      Enum.reduce(points, {0.0, 0.0, 0.0}, fn {x, y}, {sxx, sxy, syy} ->
        {dx, dy} = {x - mx, y - my}
        {sxx + dx * dx, sxy + dx * dy, syy + dy * dy}
      end)

    cond do
      sxx == 0 -> nil
      syy == 0 -> {0.0, 1.0}
      true -> {sxy / sxx, sxy * sxy / (sxx * syy)}
    end
  end
end
