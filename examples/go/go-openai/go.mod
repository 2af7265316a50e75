module github.com/local-llm-lab/examples/go-openai

go 1.22

require github.com/sashabaranov/go-openai v1.43.0
