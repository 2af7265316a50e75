package main

// Live tests: they run the example against the server in OPENAI_BASE_URL (default llama-server on :8080) and
// fail when nobody answers there. Set LABKIT_GO_SKIP_LIVE=1 to skip them (e.g. `go vet`-only CI).
// The 401 test needs a llama-server started with --api-key: LABKIT_KEYED_BASE_URL + LABKIT_KEYED_API_KEY.
// The tests without a server (TestWire*, TestRetries*) use a recorder and always run.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
)

// liveOptions are the options the example would use here, after checking the server answers.
func liveOptions(t *testing.T, args ...string) Options {
	t.Helper()
	if os.Getenv("LABKIT_GO_SKIP_LIVE") == "1" {
		t.Skip("LABKIT_GO_SKIP_LIVE=1: live server tests skipped")
	}
	o, err := ParseOptions(append([]string{"-max-tokens", "16"}, args...), os.Stderr)
	if err != nil {
		t.Fatal(err)
	}
	requireServer(t, o.BaseURL, o.APIKey)
	return o
}

func requireServer(t *testing.T, baseURL, key string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, strings.TrimRight(baseURL, "/")+"/models", nil)
	req.Header.Set("Authorization", "Bearer "+key)
	resp, err := (&http.Client{Timeout: 5 * time.Second}).Do(req)
	if err != nil {
		t.Fatalf("no OpenAI-compatible server at %s (%v).\nStart one (`labkit up`), point OPENAI_BASE_URL at it, "+
			"or set LABKIT_GO_SKIP_LIVE=1 to skip the live tests.", baseURL, err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s/models answered %s; is OPENAI_API_KEY right?", baseURL, resp.Status)
	}
}

// isOllama: Ollama answers /api/version at the server root; llama-server does not.
func isOllama(baseURL string) bool {
	root := strings.TrimSuffix(strings.TrimRight(baseURL, "/"), "/v1")
	resp, err := (&http.Client{Timeout: 5 * time.Second}).Get(root + "/api/version")
	if err != nil {
		return false
	}
	defer resp.Body.Close()
	var v struct{ Version string }
	return resp.StatusCode == http.StatusOK && json.NewDecoder(resp.Body).Decode(&v) == nil && v.Version != ""
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return c
}

// attempts counts the HTTP requests the SDK really sends (retries included) and their retry-count headers.
type attempts struct {
	mu      sync.Mutex
	headers []string
}

func (a *attempts) middleware(req *http.Request, next option.MiddlewareNext) (*http.Response, error) {
	a.mu.Lock()
	a.headers = append(a.headers, req.Header.Get("X-Stainless-Retry-Count"))
	a.mu.Unlock()
	return next(req)
}

func (a *attempts) n() int { a.mu.Lock(); defer a.mu.Unlock(); return len(a.headers) }

func checkUsage(t *testing.T, r Result, maxTokens int) {
	t.Helper()
	u := r.Usage
	if u.PromptTokens <= 0 || u.CompletionTokens <= 0 || u.CompletionTokens > int64(maxTokens) {
		t.Errorf("%s usage %+v: want prompt > 0 and 0 < completion <= %d", r.Mode, u, maxTokens)
	}
	if u.TotalTokens != u.PromptTokens+u.CompletionTokens {
		t.Errorf("%s usage: total %d != prompt %d + completion %d", r.Mode, u.TotalTokens, u.PromptTokens, u.CompletionTokens)
	}
	if r.FinishReason != "stop" && r.FinishReason != "length" {
		t.Errorf("%s finish_reason %q, want stop or length", r.Mode, r.FinishReason)
	}
}

// TestChat: a non-streamed reply. The SDK keeps fields it does not model: llama-server's `timings` is there
// (resp.JSON.ExtraFields), Ollama sends none. go-openai decodes into fixed structs and drops them.
func TestChat(t *testing.T) {
	o := liveOptions(t)
	client := NewClient(o)
	r, err := Chat(ctx(t), &client, o)
	if err != nil {
		t.Fatal(err)
	}
	if strings.TrimSpace(r.Content) == "" {
		t.Errorf("empty reply: %+v", r)
	}
	checkUsage(t, r, o.MaxTokens)
	if hasTimings := slices.Contains(r.ServerExtras, "timings"); hasTimings == isOllama(o.BaseURL) {
		t.Errorf("extra response fields %v: want llama-server's `timings` exactly when the server is llama-server", r.ServerExtras)
	}
}

// TestStreamMatchesChat: the deltas add up to what ChatCompletionAccumulator rebuilt, and the usage comes in
// exactly one chunk. The accumulator *adds* usage over chunks, so one usage chunk is what makes its sum right;
// both servers send usage only in the last, choice-less chunk (stream_options.include_usage).
func TestStreamMatchesChat(t *testing.T) {
	o := liveOptions(t)
	client := NewClient(o)
	var deltas []string
	s, err := Stream(ctx(t), &client, o, func(d string) { deltas = append(deltas, d) })
	if err != nil {
		t.Fatal(err)
	}
	if len(deltas) < 2 || strings.Join(deltas, "") != s.Content {
		t.Errorf("want several deltas that join to the accumulated content; got %d deltas, content %q", len(deltas), s.Content)
	}
	if s.UsageChunks != 1 {
		t.Errorf("%d chunks carried usage, want exactly 1 (the accumulator sums them)", s.UsageChunks)
	}
	checkUsage(t, s, o.MaxTokens)
	c, err := Chat(ctx(t), &client, o)
	if err != nil {
		t.Fatal(err)
	}
	// Same prompt, seed and temperature 0: the same tokens, streamed or not.
	if s.Usage.CompletionTokens != c.Usage.CompletionTokens || s.FinishReason != c.FinishReason {
		t.Errorf("stream %+v and chat %+v differ", s, c)
	}
}

func TestRunJSON(t *testing.T) {
	o := liveOptions(t)
	var out, errOut bytes.Buffer
	if err := Run(ctx(t), []string{"-json", "-max-tokens", "8"}, &out, &errOut); err != nil {
		t.Fatalf("Run: %v\n%s", err, errOut.String())
	}
	var modes []string
	sc := bufio.NewScanner(&out)
	for sc.Scan() {
		var r Result
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			t.Fatalf("not JSON: %q", sc.Text())
		}
		checkUsage(t, r, 8)
		modes = append(modes, r.Mode)
	}
	if strings.Join(modes, ",") != "stream,chat" {
		t.Errorf("modes %v, want stream then chat (model %s)", modes, o.Model)
	}
}

// TestToolRequest: the request with `tools` (go-openai's example has none; this is the part that is new).
// The tiny model does not call tools by itself here, so this checks only that the request is accepted and
// answered: llama-server answers (the lab's default server's template has no tools, so none can come back);
// lesson 07's llama-server with a tool-aware template is what makes a real call. Ollama refuses tools for a
// model whose template has none: a 400, not retried.
func TestToolRequest(t *testing.T) {
	o := liveOptions(t, "-mode", "tool", "-max-tokens", "8")
	var a attempts
	client := NewClient(o, option.WithMiddleware(a.middleware))
	r, err := ToolChat(ctx(t), &client, o)
	if isOllama(o.BaseURL) {
		var apiErr *openai.Error
		if !errors.As(err, &apiErr) || apiErr.StatusCode != http.StatusBadRequest ||
			!strings.Contains(apiErr.Message, "does not support tools") {
			t.Fatalf("Ollama with tools for a model without them: want a 400 \"does not support tools\", got %v", err)
		}
		if !strings.Contains(err.Error(), "lesson 07") || a.n() != 1 {
			t.Errorf("want a hint towards lesson 07 and a single attempt; got %d attempts, %v", a.n(), err)
		}
		return
	}
	if err != nil {
		t.Fatalf("llama-server should accept a request with tools: %v", err)
	}
	if r.FinishReason != "stop" && r.FinishReason != "length" && r.FinishReason != "tool_calls" {
		t.Errorf("finish_reason %q", r.FinishReason)
	}
	if strings.TrimSpace(r.Content) == "" && len(r.ToolCalls) == 0 {
		t.Errorf("neither text nor a tool call: %+v", r)
	}
	t.Logf("tool request answered: finish_reason=%s tool_calls=%v content=%q", r.FinishReason, r.ToolCalls, r.Content)
}

// TestTokenLimitField: the SDK documents max_completion_tokens (MaxTokens is deprecated there). llama-server
// honours both; Ollama v0.24 ignores max_completion_tokens, so the example sends max_tokens. We stream and hang
// up once more chunks than the limit arrived, so an ignored limit costs a few tokens, not a whole context.
func TestTokenLimitField(t *testing.T) {
	const limit = 4
	o := liveOptions(t, "-prompt", "What is 2+2?", "-max-tokens", "4")
	client := NewClient(o)
	chunks := map[string]int{}
	ignored := map[string]bool{}
	for _, field := range []string{"max_tokens", "max_completion_tokens"} {
		o.MaxTokensField = field
		req := Request(o)
		// Stop at the first full stop too: if the limit is ignored, the answer still ends within a sentence.
		req.Stop = openai.ChatCompletionNewParamsStopUnion{OfString: openai.String(".")}
		stream := client.Chat.Completions.NewStreaming(ctx(t), req)
		for stream.Next() {
			for _, c := range stream.Current().Choices {
				if c.Delta.Content != "" {
					chunks[field]++
				}
			}
			if chunks[field] > limit+2 {
				ignored[field] = true
				break
			}
		}
		if err := stream.Err(); err != nil {
			t.Fatalf("%s: %v", field, err)
		}
		stream.Close()
	}
	if ignored["max_tokens"] || chunks["max_tokens"] > limit {
		t.Errorf("max_tokens=%d not honoured: %d chunks", limit, chunks["max_tokens"])
	}
	if isOllama(o.BaseURL) != ignored["max_completion_tokens"] {
		t.Errorf("max_completion_tokens=%d: ignored=%v (%d chunks); want ignored only by Ollama",
			limit, ignored["max_completion_tokens"], chunks["max_completion_tokens"])
	}
	t.Logf("max_tokens → %d chunks; max_completion_tokens → %d chunks (ignored: %v)",
		chunks["max_tokens"], chunks["max_completion_tokens"], ignored["max_completion_tokens"])
}

// TestKeyedServer401: a llama-server started with --api-key. A wrong key is a 401 *openai.Error, sent once (4xx
// other than 408/409/429 is not retried); its Error() is the status alone, the server's words are in Message.
// Streamed, the 401 arrives as stream.Err(), not from NewStreaming. The right key works.
func TestKeyedServer401(t *testing.T) {
	base, key := os.Getenv("LABKIT_KEYED_BASE_URL"), os.Getenv("LABKIT_KEYED_API_KEY")
	if base == "" || key == "" {
		t.Skip("set LABKIT_KEYED_BASE_URL and LABKIT_KEYED_API_KEY (a llama-server with --api-key) to run this")
	}
	requireServer(t, base, key)
	o := Options{BaseURL: base, APIKey: "sk-wrong", Model: DefaultModel, Prompt: "你好", MaxTokens: 4,
		MaxTokensField: "max_tokens", MaxRetries: 2}
	var a attempts
	wrong := NewClient(o, option.WithMiddleware(a.middleware))
	_, err := wrong.Chat.Completions.New(ctx(t), Request(o))
	var apiErr *openai.Error
	if !errors.As(err, &apiErr) || apiErr.StatusCode != http.StatusUnauthorized {
		t.Fatalf("wrong key against --api-key: want a 401 *openai.Error, got %v", err)
	}
	if apiErr.Error() != "OpenAI API error: 401 Unauthorized" || apiErr.Message != "Invalid API Key" ||
		apiErr.Type != "authentication_error" {
		t.Errorf("401: Error()=%q Message=%q Type=%q", apiErr.Error(), apiErr.Message, apiErr.Type)
	}
	// llama-server sends "code": 401, a number; the SDK's Code is a string, and its decoder turns the number into "401".
	if apiErr.Code != "401" || apiErr.JSON.Code.Raw() != "401" {
		t.Errorf("code: Code=%q raw=%q", apiErr.Code, apiErr.JSON.Code.Raw())
	}
	if a.n() != 1 {
		t.Errorf("401 sent %d times, want once (not retried)", a.n())
	}
	if msg := explain(err, o).Error(); !strings.Contains(msg, `"Invalid API Key"`) || !strings.Contains(msg, "-api-key") {
		t.Errorf("the explained error should carry the server's message and what to do: %s", msg)
	}
	stream := wrong.Chat.Completions.NewStreaming(ctx(t), Request(o))
	if stream.Next() || !errors.As(stream.Err(), &apiErr) || apiErr.StatusCode != http.StatusUnauthorized {
		t.Errorf("streamed with a wrong key: want Next() false and a 401 in Err(), got %v", stream.Err())
	}
	stream.Close()
	o.APIKey = key
	right := NewClient(o)
	r, err := Chat(ctx(t), &right, o)
	if err != nil {
		t.Fatalf("the right key should work: %v", err)
	}
	checkUsage(t, r, o.MaxTokens)
}

func TestUnreachableServerIsAnError(t *testing.T) {
	t.Parallel() // it waits out the retry backoffs, as TestRetries does: the two waits overlap
	var out, errOut bytes.Buffer
	start := time.Now()
	err := Run(context.Background(), []string{"-base-url", "http://127.0.0.1:9/v1", "-timeout", "10s"}, &out, &errOut)
	if err == nil || !strings.Contains(err.Error(), "is the server up?") {
		t.Fatalf("want an error that says what to do, got %v", err)
	}
	// A refused connection is retried twice (backoff ~0.5 s, ~1 s, less jitter): go-openai fails at once.
	if took := time.Since(start); took < 800*time.Millisecond {
		t.Errorf("failed after %v: want the SDK's two retries first", took)
	}
}

func TestBadFlagsAreErrors(t *testing.T) {
	for _, args := range [][]string{{"-mode", "x"}, {"-max-tokens", "0"}, {"-max-tokens-field", "n_predict"}, {"-max-retries", "-1"}} {
		if _, err := ParseOptions(args, &bytes.Buffer{}); err == nil {
			t.Errorf("%v: want an error", args)
		}
	}
}

// recorder is a fake server that keeps every request's headers and body and answers with status and body.
type recorder struct {
	mu      sync.Mutex
	headers []http.Header
	bodies  []map[string]any
}

func (rec *recorder) serve(t *testing.T, status int, body string) *httptest.Server {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		raw, _ := io.ReadAll(r.Body)
		var m map[string]any
		_ = json.Unmarshal(raw, &m)
		rec.mu.Lock()
		rec.headers, rec.bodies = append(rec.headers, r.Header.Clone()), append(rec.bodies, m)
		rec.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		_, _ = w.Write([]byte(body))
	}))
	t.Cleanup(srv.Close)
	return srv
}

// TestWireFormat: what the SDK puts on the wire for our request, next to what go-openai sends.
func TestWireFormat(t *testing.T) {
	var rec recorder
	srv := rec.serve(t, http.StatusUnauthorized, `{"error":{"message":"Invalid API Key","type":"authentication_error","code":401}}`)
	// openai.NewClient reads these by itself and sends them to any server; go-openai reads no environment.
	t.Setenv("OPENAI_ORG_ID", "org-from-env")
	o := Options{BaseURL: srv.URL + "/v1", APIKey: "sk-secret", Model: DefaultModel, Prompt: "hi", MaxTokens: 3,
		MaxTokensField: "max_tokens", Seed: 42}
	client := NewClient(o)
	_, _ = client.Chat.Completions.New(ctx(t), Request(o))
	o.MaxTokensField = "max_completion_tokens"
	_, _ = Stream(ctx(t), &client, o, nil)
	if len(rec.bodies) != 2 {
		t.Fatalf("want 2 requests (a 401 is not retried), saw %d", len(rec.bodies))
	}
	chat, stream := rec.bodies[0], rec.bodies[1]
	// temperature 0 is sent (go-openai leaves it out, and the server's default 0.8 applies)
	if v, ok := chat["temperature"]; !ok || v != 0.0 {
		t.Errorf("temperature: %v (sent: %v), want 0", v, ok)
	}
	if chat["max_tokens"] != 3.0 || chat["max_completion_tokens"] != nil || chat["seed"] != 42.0 {
		t.Errorf("chat body %v: want max_tokens 3, no max_completion_tokens, seed 42", chat)
	}
	if stream["max_completion_tokens"] != 3.0 || stream["max_tokens"] != nil || stream["stream"] != true {
		t.Errorf("stream body %v: want max_completion_tokens 3, no max_tokens, stream true", stream)
	}
	if so, _ := stream["stream_options"].(map[string]any); so["include_usage"] != true {
		t.Errorf("stream_options %v: want include_usage true", stream["stream_options"])
	}
	h := rec.headers[0]
	if h.Get("Authorization") != "Bearer sk-secret" || h.Get("OpenAI-Organization") != "org-from-env" ||
		h.Get("X-Stainless-Retry-Count") != "0" {
		t.Errorf("headers: Authorization %q, OpenAI-Organization %q, X-Stainless-Retry-Count %q",
			h.Get("Authorization"), h.Get("OpenAI-Organization"), h.Get("X-Stainless-Retry-Count"))
	}
}

// TestRetries: a 5xx is sent three times by default (go-openai: once), with the retry number in a header; a 401
// once. -max-retries 0 turns retries off. A local server's 500 (Ollama's "model runner has unexpectedly
// stopped", a request too big for the context) is rarely transient: each retry runs the request again.
func TestRetries(t *testing.T) {
	t.Parallel()
	var rec recorder
	srv := rec.serve(t, http.StatusInternalServerError, `{"error":{"message":"model runner has unexpectedly stopped"}}`)
	o := Options{BaseURL: srv.URL + "/v1", APIKey: "sk", Model: DefaultModel, Prompt: "hi", MaxTokens: 1,
		MaxTokensField: "max_tokens", MaxRetries: 2}
	for _, retries := range []int{2, 0} {
		o.MaxRetries = retries
		var a attempts
		client := NewClient(o, option.WithMiddleware(a.middleware))
		_, err := Chat(ctx(t), &client, o)
		var apiErr *openai.Error
		if !errors.As(err, &apiErr) || apiErr.StatusCode != http.StatusInternalServerError ||
			!strings.Contains(err.Error(), "model runner has unexpectedly stopped") {
			t.Fatalf("want a 500 carrying the server's message, got %v", err)
		}
		want := []string{"0", "1", "2"}[:retries+1]
		if !slices.Equal(a.headers, want) {
			t.Errorf("max retries %d: X-Stainless-Retry-Count of each attempt %v, want %v", retries, a.headers, want)
		}
	}
}
